"""Optional dependencies ("extras"): a storage whose extra is missing is refused when it is
built, with the ``pip install`` that fixes it, not at its first request with a bare
``No module named ...``. Importing the package imports none of them; this only looks them
up (``importlib.util.find_spec``), so building a storage stays cheap."""

from __future__ import annotations

import importlib.util

from ._errors import ConfigurationError

__all__ = ["EXTRAS", "MissingDependencyError", "require_extra"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "s3": ("aiobotocore", "aiohttp", "yarl"),
    "gcs": ("gcloud.aio.auth", "aiohttp"),
    "azure": ("azure.storage.blob", "aiohttp"),
    "zarr": ("zarr",),
}
"""Extra name -> the modules it brings that the code imports (pyproject.toml lists the
distributions)."""


class MissingDependencyError(ConfigurationError, ImportError):
    """A storage needs an optional dependency that is not installed.

    Also an ImportError, so ``except ImportError`` around an optional backend works.
    """


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a blocked module
        return False


def require_extra(extra: str, what: str) -> None:
    """Raise MissingDependencyError naming ``pip install 'icechunk-storage[extra]'`` if any
    module of ``extra`` is missing. ``what`` names the caller, e.g. ``"s3_storage"``."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MissingDependencyError(
            f"{what} needs the {extra!r} extra, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install it with "
            f"pip install 'icechunk-storage[{extra}]'."
        )
