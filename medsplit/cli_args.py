"""Argparse building blocks of ``python -m medsplit``: the parser class whose sub-commands may
take ``key=value`` overrides after their options, and comma-separated list types."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["CommandParser", "choice_list", "int_list", "positive_int"]


class CommandParser(argparse.ArgumentParser):
    """The parser of ``python -m medsplit`` and, through ``add_subparsers``, of its commands.

    Args:
        trailing_overrides: the ``dest`` of a ``nargs='*'`` positional that also takes the words
            left after the options (``sweep CFG --axis cut a=1``). Plain argparse fills such a
            positional at the first run of positionals it meets and rejects later ones as
            unrecognised; this parser hands them to it instead. Words starting with ``-``
            (unknown options) stay unrecognised.
        **kwargs: :class:`argparse.ArgumentParser`'s arguments.
    """

    def __init__(self, *args, trailing_overrides: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.trailing_overrides = trailing_overrides

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if self.trailing_overrides and extras:
            words = [a for a in extras if not a.startswith(tuple(self.prefix_chars))]
            setattr(namespace, self.trailing_overrides, [*getattr(namespace, self.trailing_overrides), *words])
            extras = [a for a in extras if a.startswith(tuple(self.prefix_chars))]
        return namespace, extras


def int_list(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,3,5, got {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--jobs``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def choice_list(valid: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A type for ``"a,b"`` lists whose items must be among ``valid``; the error lists them."""

    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; valid choices are {list(valid)}")
        return items

    return parse
