"""Key validation and prefixing: the one place a key is checked and joined to a prefix.

A key is relative to the storage's prefix, uses ``/`` as separator, and can never reach
outside that prefix: absolute keys, empty or ``.``/``..`` segments, backslashes and control
characters (NUL included) are refused with :class:`InvalidKeyError`.
"""

from __future__ import annotations

import re

from ._errors import InvalidKeyError

__all__ = ["join_key", "normalize_list_prefix", "normalize_prefix", "strip_prefix", "validate_key"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid relative key; raise InvalidKeyError otherwise."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"A key must be a str, got {type(key).__name__} {key!r}.")
    if not key:
        raise InvalidKeyError("A key must not be empty.")
    if key.startswith("/"):
        raise InvalidKeyError(
            f"Key {key!r} is absolute; keys are relative to the storage prefix, drop the "
            "leading '/'."
        )
    if _CONTROL.search(key):
        raise InvalidKeyError(f"Key {key!r} contains a control character (NUL included).")
    if "\\" in key:
        raise InvalidKeyError(f"Key {key!r} contains a backslash; use '/' as the separator.")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(
                f"Key {key!r} has an empty, '.' or '..' segment; such keys could reach outside "
                "the storage prefix."
            )
    return key


def normalize_prefix(prefix: str | None) -> str:
    """A storage prefix without leading or trailing ``/``; ``None`` and ``""`` mean the root."""
    if prefix is None:
        return ""
    stripped = prefix.strip("/")
    if stripped:
        validate_key(stripped)
    return stripped


def join_key(prefix: str, key: str) -> str:
    """The backend path of ``key`` under a normalized ``prefix``."""
    return f"{prefix}/{key}" if prefix else key


def strip_prefix(prefix: str, path: str) -> str:
    """Inverse of :func:`join_key`."""
    if not prefix:
        return path
    return path[len(prefix) + 1 :]


def normalize_list_prefix(prefix: str) -> str:
    """A listing prefix: ``"a"`` and ``"a/"`` become ``"a/"``; ``""`` and ``"/"`` become ``""``.

    Listing matches whole segments, so ``"a"`` lists ``a/x`` but not ``ab``.
    """
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    validate_key(stripped)
    return stripped + "/"
