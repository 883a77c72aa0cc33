"""The one place where Azure answers become our error tree, on both request paths.

The shared transport gives a status, headers (``x-ms-error-code``) and a capped XML body;
the SDK raises ``HttpResponseError`` (status and error code) or azure-core transport errors.
Both end in :func:`error_for_status`. Messages name the operation, the blob, the status and
Azure's error code and message, never a credential; an error body is cut to 300 characters
and SAS-looking query parameters are removed from it. SDK exceptions are not chained
(``from None``): their text can echo the request's URL or signature, so a traceback could
show a SAS token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .._errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConnectionLostError,
    EndpointUnreachableError,
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

__all__ = ["AzureErrorContext", "azure_errors", "error_for_status", "parse_error_body"]

AUTHENTICATION_CODES = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailure",
        "InvalidAuthenticationInfo",
        "NoAuthenticationInformation",
        "ExpiredAuthenticationToken",
    }
)
THROTTLING_CODES = frozenset({"ServerBusy", "OperationTimedOut", "TooManyRequests"})
_SIGNATURE = re.compile(r"(sig|signature)=[^&\s<\"']*", re.IGNORECASE)
_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.DOTALL)
_CODE = re.compile(rb"<Code>(.*?)</Code>", re.DOTALL)


class AzureErrorContext:
    """What a failed request was doing, to choose the right error and message."""

    __slots__ = ("auth_kind", "container", "expected", "mode", "operation", "path")

    def __init__(
        self,
        operation: str,
        path: str,
        container: str,
        *,
        mode: object = None,
        expected: VersionInfo | None = None,
        auth_kind: str | None = None,
    ) -> None:
        self.operation = operation
        self.path = path
        self.container = container
        self.mode = mode
        self.expected = expected
        self.auth_kind = auth_kind

    def describe(self) -> str:
        return f"{self.operation} of {self.path!r} in container {self.container!r}"


def _clean(text: str) -> str:
    return _SIGNATURE.sub(r"\1=REDACTED", text.strip())[:300]


def parse_error_body(body: bytes | bytearray | memoryview) -> tuple[str | None, str | None]:
    """``(code, message)`` from Azure's XML error body; message is first line only."""
    raw = bytes(body[:65536])
    code = _CODE.search(raw)
    message = _MESSAGE.search(raw)
    return (
        _clean(code[1].decode(errors="replace")) if code else None,
        _clean(message[1].decode(errors="replace").splitlines()[0]) if message else None,
    )


def error_for_status(
    status: int,
    code: str | None,
    message: str | None,
    context: AzureErrorContext,
) -> StorageError:
    """The error for an Azure status and ``x-ms-error-code``."""
    detail = f"{context.describe()} failed: HTTP {status}"
    if code:
        detail += f" {code}"
    if message:
        detail += f": {message}"
    path = context.path
    if status == 412 or code in ("ConditionNotMet", "SourceConditionNotMet"):
        if context.mode == "create":
            return AlreadyExistsError(path)
        return PreconditionFailedError(path, context.expected or context.mode, detail + ".")
    if status == 409 and code == "BlobAlreadyExists":
        return AlreadyExistsError(path)
    if status == 404 and code not in ("ContainerNotFound", "ResourceNotFound"):
        return ObjectNotFoundError(path, f"No object at {path!r} ({detail}).")
    if status == 404:
        return StorageError(detail + ". Check the account and container names.")
    if status == 416:
        return RangeNotSatisfiableError(detail + ".")
    if status == 401 or (status == 403 and code in AUTHENTICATION_CODES):
        hint = " Check the account key or token."
        if context.auth_kind == "sas":
            hint = " Check that the SAS token is valid for this account and has not expired."
        elif context.auth_kind is None:
            hint = " The request was anonymous: the container is not public; pass credentials."
        return AuthenticationError(detail + "." + hint)
    if status == 403:
        return PermissionDeniedError(
            detail + ". The credentials do not allow this operation (a read-only SAS token?)."
        )
    if status in (429, 503) or code in THROTTLING_CODES:
        return ThrottledError(detail + ".")
    if status == 408:
        return StorageTimeoutError(detail + ".")
    if status >= 500:
        return ServerError(detail + ".")
    return StorageError(detail + ".")


def response_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | bytearray | memoryview,
    context: AzureErrorContext,
) -> StorageError:
    code, message = parse_error_body(body)
    return error_for_status(status, headers.get("x-ms-error-code") or code, message, context)


@contextmanager
def azure_errors(context: AzureErrorContext) -> Iterator[None]:
    """Translate azure-core exceptions raised inside into our tree (chained)."""
    from azure.core.exceptions import (
        HttpResponseError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    try:
        yield
    except StorageError:
        raise
    except HttpResponseError as exc:
        status = exc.status_code or 0
        error_code = getattr(exc, "error_code", None)
        code = error_code if isinstance(error_code, str) else None
        message = None
        reason = getattr(exc, "reason", None)
        if isinstance(reason, str):
            message = _clean(reason)
        raise error_for_status(status, code, message, context) from None
    except (ServiceRequestTimeoutError, ServiceResponseTimeoutError, TimeoutError) as exc:
        raise StorageTimeoutError(
            f"{context.describe()} timed out ({type(exc).__name__})."
        ) from None
    except (ServiceRequestError, ServiceResponseError, OSError) as exc:
        kind = EndpointUnreachableError if is_connection_refused(exc) else ConnectionLostError
        raise kind(f"{context.describe()} lost its connection ({type(exc).__name__}).") from None
