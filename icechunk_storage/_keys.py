"""Key validation and prefixing: the one place a key is checked and joined to a prefix.

A key is relative to the storage's prefix, uses ``/`` as separator, and can never reach
outside that prefix: absolute keys, empty or ``.``/``..`` segments, backslashes and control
characters (NUL included) are refused with :class:`InvalidKeyError`.

The same rules hold on every backend, with limits every provider accepts: a key encodes to
valid UTF-8 (no lone surrogates), the key joined to its prefix is at most
:data:`MAX_KEY_BYTES` (S3's and GCS's limit; Azure allows more), and a segment at most
:data:`MAX_SEGMENT_BYTES` (a file name on the local filesystem). A listing prefix obeys the
same rules as a key: ``list("/abs")`` is refused like ``get("/abs")``.
"""

from __future__ import annotations

import re

from ._errors import InvalidKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "join_key",
    "normalize_list_prefix",
    "normalize_prefix",
    "strip_prefix",
    "validate_key",
]

MAX_KEY_BYTES = 1024
"""A key with its prefix, in UTF-8 bytes: S3 and GCS allow 1,024."""
MAX_SEGMENT_BYTES = 255
"""One ``/``-separated segment, in UTF-8 bytes: a file name's limit on local filesystems."""

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
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyError(
            f"Key {key!r} is not valid Unicode (a lone surrogate); keys are stored as UTF-8."
        ) from None
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"Key {_short(key)} is {size} bytes in UTF-8; at most {MAX_KEY_BYTES} are allowed "
            "(with the storage prefix) on every backend."
        )
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(
                f"Key {_short(key)} has an empty, '.' or '..' segment; such keys could reach "
                "outside the storage prefix."
            )
        if len(segment) * 4 > MAX_SEGMENT_BYTES and len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidKeyError(
                f"Key {_short(key)} has a segment of {len(segment.encode())} bytes in UTF-8; "
                f"at most {MAX_SEGMENT_BYTES} are allowed between two '/'."
            )
    return key


def _short(key: str) -> str:
    """A key for a message: long keys are cut (the message must stay readable)."""
    return repr(key) if len(key) <= 80 else f"{key[:60]!r}... ({len(key)} characters)"


def normalize_prefix(prefix: str | None) -> str:
    """A storage prefix without leading or trailing ``/``; ``None`` and ``""`` mean the root."""
    if prefix is None:
        return ""
    stripped = prefix.strip("/")
    if stripped:
        validate_key(stripped)
    return stripped


def join_key(prefix: str, key: str) -> str:
    """The backend path of ``key`` under a normalized ``prefix``, within MAX_KEY_BYTES."""
    if not prefix:
        return key
    path = f"{prefix}/{key}"
    if len(path) * 4 > MAX_KEY_BYTES and len(path.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"Key {_short(key)} under prefix {_short(prefix)} is {len(path.encode())} bytes in "
            f"UTF-8; at most {MAX_KEY_BYTES} are allowed with the prefix on every backend."
        )
    return path


def strip_prefix(prefix: str, path: str) -> str:
    """Inverse of :func:`join_key`."""
    if not prefix:
        return path
    return path[len(prefix) + 1 :]


def normalize_list_prefix(prefix: str) -> str:
    """A listing prefix: ``"a"`` and ``"a/"`` become ``"a/"``; ``""`` and ``"/"`` become ``""``.

    Listing matches whole segments, so ``"a"`` lists ``a/x`` but not ``ab``. Otherwise the
    rules of a key hold: ``"/abs"`` is absolute and refused, as ``get("/abs")`` is.
    """
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"A listing prefix must be a str, got {type(prefix).__name__}.")
    if prefix == "/":
        return ""
    stripped = prefix.removesuffix("/")
    if not stripped:
        return ""
    validate_key(stripped)
    return stripped + "/"
