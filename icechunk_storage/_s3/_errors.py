"""The one place where botocore errors and S3 error responses become our error tree.

Both request paths end here: aiobotocore calls (``ClientError`` and botocore transport
errors) and the lean data plane (an HTTP status plus the S3 XML error body; transport
failures arrive already typed by ``_transport``). Matching goes from the most specific
to the most general, and the original exception is always chained (``raise ... from
exc``). Retryability is decided here once, by choosing a :class:`TransientError`
subclass; nothing downstream parses messages.

Messages name the operation, the key, the HTTP status and the S3 error code and message;
never a credential.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .._errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    EndpointUnreachableError,
    MultipartUploadVanishedError,
    NotSupportedByServerError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    ServerError,
    StorageError,
    StorageTimeoutError,
    ThrottledError,
    is_connection_refused,
)
from .._storage import VersionInfo

__all__ = [
    "MultipartUploadVanishedError",
    "S3ErrorContext",
    "error_for_status",
    "s3_errors",
    "translate_exception",
]

CONDITION_CODES = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "ConcurrentModification"}
)
AUTHENTICATION_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "InvalidToken",
        "MissingSecurityHeader",
        "RequestExpired",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "UnrecognizedClientException",
    }
)
THROTTLING_CODES = frozenset(
    {
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "Throttled",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
    }
)
TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException"})
SERVER_CODES = frozenset(
    {"InternalError", "InternalServerError", "ServiceUnavailable", "PriorRequestNotComplete"}
)
REDIRECT_CODES = frozenset({"PermanentRedirect", "TemporaryRedirect", "IncorrectEndpoint"})


class S3ErrorContext:
    """What a failed request was doing, to choose the right error and message."""

    __slots__ = ("bucket", "expected", "mode", "operation", "path")

    def __init__(
        self,
        operation: str,
        path: str,
        bucket: str,
        *,
        mode: object = None,
        expected: VersionInfo | None = None,
    ) -> None:
        self.operation = operation
        self.path = path
        self.bucket = bucket
        self.mode = mode  # "create", a VersionInfo (update), or None
        self.expected = expected  # copy: the source version required

    def describe(self) -> str:
        return f"{self.operation} of {self.path!r} in bucket {self.bucket!r}"


_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """``(Code, Message)`` from an S3 XML error body, if it has them."""
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    return (
        code.group(1).decode("utf-8", "replace") if code else None,
        message.group(1).decode("utf-8", "replace") if message else None,
    )


def error_for_status(
    status: int,
    code: str | None,
    message: str | None,
    context: S3ErrorContext,
    headers: Mapping[str, str] | None = None,
) -> StorageError:
    """The error for an S3 error response. Most specific first."""
    what = context.describe()
    detail = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
    if message:
        detail += f": {message}"
    conditional = context.mode is not None or context.expected is not None

    if conditional and (code in CONDITION_CODES or status in (409, 412)):
        return _condition_failed(context, detail)
    if code == "NoSuchUpload" or (context.operation == "complete_multipart" and status == 404):
        return MultipartUploadVanishedError(
            f"{what} failed: the multipart upload is gone ({detail})."
        )
    if code == "NoSuchBucket":
        return ConfigurationError(
            f"{what} failed: bucket {context.bucket!r} does not exist ({detail}). Create it, "
            "or fix the bucket name."
        )
    if status == 404 or code in ("NoSuchKey", "NotFound"):
        if isinstance(context.mode, VersionInfo):
            # If-Match on a key that holds no object: the version we expected is gone.
            return PreconditionFailedError(
                context.path,
                context.mode,
                f"Refused to write {context.path!r}: it no longer exists, so it is not at the "
                f"expected version {context.mode}.",
            )
        return ObjectNotFoundError(context.path)
    if status == 416 or code == "InvalidRange":
        return RangeNotSatisfiableError(
            f"{what}: the byte range starts past the end of the object ({detail})."
        )
    if code in AUTHENTICATION_CODES or status == 401:
        return AuthenticationError(f"{what} failed: the credentials were rejected ({detail}).")
    region = (headers or {}).get("x-amz-bucket-region")
    if (
        code in REDIRECT_CODES
        or status in (301, 302, 307, 308)
        or code == "AuthorizationHeaderMalformed"
    ):  # never followed: a redirect to another origin would carry our signature there
        hint = f" pass region={region!r}" if region else " check region and endpoint_url"
        return ConfigurationError(
            f"{what} failed: the request went to the wrong region or endpoint ({detail});{hint}."
        )
    if status == 403:
        return PermissionDeniedError(f"{what} was refused: permission denied ({detail}).")
    if code in THROTTLING_CODES or status == 429:
        return ThrottledError(f"{what} was throttled ({detail}).")
    if code in TIMEOUT_CODES or status == 408:
        return StorageTimeoutError(f"{what} timed out on the server ({detail}).")
    if status == 501:
        return NotSupportedByServerError(
            f"{what} failed: the server does not implement this request ({detail}). "
            "S3-compatible stores often reject checksum headers: leave checksum_algorithm "
            "unset."
        )
    if code in SERVER_CODES or status == 499 or status >= 500:
        return ServerError(f"{what} failed on the server ({detail}).")
    return StorageError(f"{what} failed ({detail}).")


def _condition_failed(context: S3ErrorContext, detail: str) -> StorageError:
    if context.expected is not None:  # conditional copy: the source moved on
        return PreconditionFailedError(
            context.path,
            context.expected,
            f"Refused to copy {context.path!r}: it is no longer at the expected version "
            f"{context.expected} ({detail}).",
        )
    if context.mode == "create":
        return AlreadyExistsError(context.path)
    return PreconditionFailedError(context.path, context.mode)


def _client_error(exc: Any, context: S3ErrorContext) -> StorageError:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = error.get("Code")
    if not status and code and str(code).isdigit():
        status = int(code)
    return error_for_status(
        status, code, error.get("Message"), context, meta.get("HTTPHeaders") or {}
    )


def translate_exception(exc: BaseException, context: S3ErrorContext) -> StorageError | None:
    """Our error for a botocore, aiohttp or socket exception; None if it is not one of those."""
    if isinstance(exc, StorageError):
        return exc
    import aiohttp
    import botocore.exceptions as bce

    what = context.describe()
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, context)
    if isinstance(exc, bce.ConnectTimeoutError | bce.ReadTimeoutError):
        return StorageTimeoutError(f"{what} timed out: {exc}")
    if isinstance(exc, bce.SSLError | aiohttp.ClientSSLError):
        return StorageError(f"{what} failed: TLS error ({exc}).")
    if is_connection_refused(exc):  # nothing listens there: retried briefly only
        return EndpointUnreachableError(f"{what} failed: the connection was refused ({exc}).")
    if isinstance(
        exc,
        bce.ConnectionError
        | bce.HTTPClientError
        | bce.IncompleteReadError
        | bce.ResponseStreamingError,
    ):
        return ConnectionLostError(f"{what} failed: the connection was lost ({exc}).")
    if isinstance(
        exc,
        bce.NoCredentialsError
        | bce.PartialCredentialsError
        | bce.CredentialRetrievalError
        | bce.TokenRetrievalError
        | bce.SSOError,
    ):
        return AuthenticationError(f"{what} failed: no usable credentials ({exc}).")
    if isinstance(exc, bce.NoRegionError | bce.ParamValidationError | bce.UnknownRegionError):
        return ConfigurationError(f"{what} failed: {exc}")
    if isinstance(exc, bce.MissingDependencyException):
        return ConfigurationError(f"{what} needs an extra package: {exc}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        return StorageTimeoutError(f"{what} timed out ({type(exc).__name__}: {exc}).")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionLostError(f"{what} failed: the response body was cut short ({exc}).")
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"{what} failed: invalid URL ({exc}).")
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return ConnectionLostError(
            f"{what} failed: the connection was lost ({type(exc).__name__}: {exc})."
        )
    if isinstance(exc, aiohttp.ClientError):
        return ConnectionLostError(f"{what} failed: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def s3_errors(context: S3ErrorContext) -> Iterator[None]:
    """Translate SDK and transport exceptions raised inside the block (chaining them)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        error = translate_exception(exc, context)
        if error is None:
            raise
        raise error from exc
