"""Hospital deployment on NVIDIA FLARE: site policies, provisioning, job folders, and the
``flare`` transport (server and hospitals as FLARE sites exchanging medsplit's wire bytes).

NVIDIA FLARE is an optional extra (``pip install -e ".[flare]"``). Only the modules that talk to
FLARE import it, and they do so through :func:`require_nvflare`, so the site policy (pure
YAML checks) and everything else in medsplit work without it.
"""

from __future__ import annotations

#: The FLARE release medsplit/flare is written and tested against (pyproject's ``flare`` extra).
NVFLARE_VERSION = "2.9.0"

INSTALL_HINT = 'pip install -e ".[flare]"'


class FlareNotInstalled(RuntimeError):
    """``split.transport=flare`` or ``medsplit flare ...`` without the optional nvflare package."""


def require_nvflare() -> str:
    """Import nvflare or raise :class:`FlareNotInstalled` saying how to install it; returns its version."""
    try:
        import nvflare  # optional extra nvflare (pip install 'medsplit[flare]')
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FlareNotInstalled(
            f"the FLARE transport needs NVIDIA FLARE, which is not installed ({e}); "
            f"install the optional extra with: {INSTALL_HINT}  (pins nvflare=={NVFLARE_VERSION})"
        ) from e
    return getattr(nvflare, "__version__", "unknown")


def nvflare_available() -> bool:
    try:
        require_nvflare()
    except FlareNotInstalled:
        return False
    return True
