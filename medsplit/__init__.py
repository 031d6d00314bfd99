"""medsplit: a healthcare split-learning benchmark.

The Python API (:mod:`medsplit.api`)::

    import medsplit

    run = medsplit.train("retinopathy", data__source="synthetic", train__epochs=1)
    run.metrics["auc"], run.paths["report"]
    medsplit.evaluate(run, "datasets/retinopathy/messidor")

``train``, ``evaluate``, ``attack``, ``load_config`` and ``RunResult`` are loaded on first use
(PEP 562 ``__getattr__``): ``import medsplit`` imports neither torch nor the API module.
"""

import sys
import types

__version__ = "0.1.0"

_API = ("RunResult", "attack", "evaluate", "load_config", "train")
#: API functions named like a module of the package (the subpackage medsplit.train, the module
#: medsplit.evaluate). Importing such a module binds it as an attribute of this package, which
#: would hide the function; the package keeps the function, and the function hands out the
#: module's attributes (medsplit.train.loop still works).
_NAMED_LIKE_MODULES = frozenset({"train", "evaluate"})

__all__ = ["RunResult", "__version__", "attack", "evaluate", "load_config", "train"]


def __getattr__(name: str):
    if name in _API:
        from medsplit import api  # lazy (PEP 562): `import medsplit` stays fast and torch-free

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'medsplit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name in _NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            return  # the import system binding medsplit.train / medsplit.evaluate: keep the API function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
