"""The one place where GCS HTTP statuses become our error tree.

GCS JSON API errors are ``{"error": {"code": 412, "message": "...", "errors": [...]}}``.
Retryability is decided here once: 408, 429, 5xx are transient (Google's own retry
guidance); connection resets and timeouts already arrive as transient errors from the
transport. Messages name the operation, the object, the bucket, the status and Google's
message; never a token.
"""

from __future__ import annotations

import json

from .._errors import (
    AlreadyExistsError,
    AuthenticationError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    ServerError,
    StorageError,
    StorageTimeoutError,
    ThrottledError,
)
from .._storage import VersionInfo

__all__ = ["error_for_status", "error_message"]

_MAX_MESSAGE = 300


def error_message(body: bytes | bytearray | memoryview) -> str:
    """Google's error message from a JSON error body, or the start of the raw body."""
    raw = bytes(body[:4096])
    try:
        parsed = json.loads(raw)
        message = parsed["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace").strip()
    message = " ".join(str(message).split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def error_for_status(
    status: int,
    body: bytes | bytearray | memoryview,
    *,
    operation: str,
    path: str,
    bucket: str,
    mode: object = None,
    expected: VersionInfo | None = None,
) -> StorageError:
    """The error for a non-2xx answer to ``operation`` on ``path``.

    ``mode``: the write condition ("create" or a VersionInfo) for puts; ``expected``: the
    source version for a conditional copy. They decide what a 412 means.
    """
    google = error_message(body)
    where = f"{operation} of {path!r} in GCS bucket {bucket!r}"
    detail = f"{where} failed with HTTP {status}" + (f": {google}" if google else "") + "."
    if status == 404:
        return ObjectNotFoundError(path, f"No object at {path!r} in GCS bucket {bucket!r}.")
    if status == 412:
        if mode == "create":
            return AlreadyExistsError(path)
        if expected is not None:
            return PreconditionFailedError(path, expected, detail)
        if isinstance(mode, VersionInfo):
            return PreconditionFailedError(path, mode)
        return PreconditionFailedError(path, None, detail)
    if status == 416:
        return RangeNotSatisfiableError(f"{detail} The byte range starts past the end.")
    if status == 401:
        return AuthenticationError(f"{detail} The credentials were rejected or expired.")
    if status == 403:
        return PermissionDeniedError(f"{detail} The credentials lack a permission.")
    if status == 408:
        return StorageTimeoutError(detail)
    if status == 429:
        return ThrottledError(detail)
    if status >= 500:
        return ServerError(detail)
    return StorageError(detail)
