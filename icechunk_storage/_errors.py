"""Every error this package raises.

The tree, and who has to act on each::

    StorageError                        base of everything raised here
    ├── ObjectNotFoundError             also FileNotFoundError: the key holds no object
    ├── ConditionFailedError            a conditional write or copy met another version
    │   ├── AlreadyExistsError          also FileExistsError: put(mode="create") found an object
    │   └── PreconditionFailedError     put/copy at version V: the object is no longer at V
    ├── MultipartUploadVanishedError    an upload in parts was gone at completion (read back)
    ├── RangeNotSatisfiableError        also ValueError: the byte range starts past the end
    ├── InvalidKeyError                 also ValueError: absolute, "..", control characters
    ├── ConfigurationError              also ValueError: bad settings or constructor arguments
    │   ├── MissingDependencyError      also ImportError: a provider's extra is not installed
    │   └── UsageError                  (the command) a bad command line: exit status 2
    ├── ReadOnlyStorageError            a write on storage that cannot write
    │   └── ReadOnlySessionError        (repository) a write on a read-only session
    ├── PermissionDeniedError           also PermissionError: the credentials lack a right
    ├── AuthenticationError             the credentials were rejected
    │   └── CredentialsRefreshError     the user's get_credentials callback failed
    ├── TLSVerificationError            the server's certificate failed verification
    ├── NotSupportedByServerError       501 and the like: the server does not implement it
    ├── SyncError                       also RuntimeError: a sync form called inside a loop
    ├── RepositoryError                 the repository layer; its subtree is drawn in
    │                                   ``_repository/_errors.py``
    ├── TransientError                  safe to retry; the retry loop catches only these
    │   ├── ThrottledError              429, 503 SlowDown
    │   ├── StorageTimeoutError         also TimeoutError: a stall, or past the deadline
    │   ├── ConnectionLostError         reset, refused, body cut short
    │   │   ├── ProtocolError           the response broke HTTP/1.1 framing
    │   │   └── EndpointUnreachableError  connection refused: retried briefly only
    │   ├── ResponseIntegrityError      wrong range, short part, bytes not asked for
    │   └── ServerError                 500, 502, 504 ...
    └── RetriesExhaustedError           a transient failure outlived the retry budget

Retryability is a property of the class: the retry loop never parses message text.
Backends translate their native errors into this tree at one boundary and chain the original
with ``raise ... from exc``. Messages are full sentences and never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "ConditionFailedError",
    "ConfigurationError",
    "ConnectionLostError",
    "CredentialsRefreshError",
    "EndpointUnreachableError",
    "InvalidKeyError",
    "MultipartUploadVanishedError",
    "NotSupportedByServerError",
    "ObjectNotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "ProtocolError",
    "RangeNotSatisfiableError",
    "ReadOnlyStorageError",
    "ResponseIntegrityError",
    "RetriesExhaustedError",
    "ServerError",
    "StorageError",
    "StorageTimeoutError",
    "TLSVerificationError",
    "ThrottledError",
    "TransientError",
]


class StorageError(Exception):
    """Base class of every error raised by icechunk_storage.

    ``operation`` ("get", "put", "list" ...) and ``key`` (the user's key, relative to the
    storage's prefix) say what failed; they are set for every error a storage operation
    raises, and None for errors raised before any operation (bad arguments)."""

    operation: str | None = None
    key: str | None = None

    def __init__(self, *args: object) -> None:
        # Messages may quote server text, which may echo a credential: redacted once, here.
        from ._redact import redact

        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The key holds no object. Caught as ``FileNotFoundError`` too."""

    def __init__(self, key: str, message: str | None = None) -> None:
        self.key = key
        super().__init__(message or f"No object at key {key!r}.")

    def __str__(self) -> str:
        return str(self.args[0])


class ConditionFailedError(StorageError):
    """A conditional write or copy found the object at another version than required."""


class AlreadyExistsError(ConditionFailedError, FileExistsError):
    """``put(mode="create")`` found an object already at the key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Refused to create {key!r}: an object already exists there "
            "(conditional create, If-None-Match: *)."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class PreconditionFailedError(ConditionFailedError):
    """A write or copy conditional on version V found the object at another version, or gone."""

    def __init__(self, key: str, expected: object, message: str | None = None) -> None:
        self.key = key
        self.expected = expected
        super().__init__(
            message
            or f"Refused to write {key!r}: it is no longer at the expected version {expected}."
        )


class MultipartUploadVanishedError(StorageError):
    """Completing an upload in parts found no upload: the shape of a completion whose first
    response was lost (the retry finds it already completed). Only a read-back of our own
    write id turns it into success."""


class RangeNotSatisfiableError(StorageError, ValueError):
    """The byte range starts past the end of the object."""


class InvalidKeyError(StorageError, ValueError):
    """The key is not a valid relative key (absolute, a ``..`` segment, control characters)."""


class ConfigurationError(StorageError, ValueError):
    """Invalid settings or constructor arguments. Caught as ``ValueError`` too."""


class ReadOnlyStorageError(StorageError):
    """A write was attempted on a storage that cannot write."""


class PermissionDeniedError(StorageError, PermissionError):
    """The server refused the operation for these credentials (HTTP 403)."""


class AuthenticationError(StorageError):
    """The server rejected the credentials (bad key, bad signature, expired token)."""


class CredentialsRefreshError(AuthenticationError):
    """The user's ``get_credentials`` callback failed and no valid credential is left."""


class TLSVerificationError(StorageError):
    """The server's TLS certificate failed verification. Not retried: fix the endpoint, or
    point ``AWS_CA_BUNDLE`` / ``SSL_CERT_FILE`` at the right CA bundle."""


class NotSupportedByServerError(StorageError):
    """The server does not implement the request (HTTP 501, an unknown API): retrying will
    not help. S3-compatible stores answer this to headers they do not know (checksums)."""


class TransientError(StorageError):
    """A failure that may succeed when retried. Only these are retried."""


class ThrottledError(TransientError):
    """The server asked us to slow down (429, 503 SlowDown)."""


class StorageTimeoutError(TransientError, TimeoutError):
    """A request did not complete in time."""


class ConnectionLostError(TransientError):
    """The connection failed: refused, reset, or the body was cut short."""


class ProtocolError(ConnectionLostError):
    """The response broke HTTP/1.1 framing (bad status line, header, chunk size ...).

    Retried on a new connection: a stale or confused intermediary is the usual cause."""


class EndpointUnreachableError(ConnectionLostError):
    """Nothing accepted the connection (refused): a wrong endpoint, or a server that is down.

    Retried only ``REFUSED_MAX_TRIES`` times (about a second in all), whatever ``max_tries``
    says: a user with a typo in ``endpoint_url`` should hear so at once, not after the whole
    retry budget (36 s by default); a server restarting within that second is still
    ridden over."""


def is_connection_refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` or anything it wraps (chained, ``os_error``, botocore's ``error``)
    is a refused connection."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError | EndpointUnreachableError):
            return True
        wrapped = getattr(exc, "os_error", None) or (getattr(exc, "kwargs", None) or {}).get(
            "error"
        )
        if isinstance(wrapped, BaseException) and is_connection_refused(wrapped):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class ResponseIntegrityError(TransientError):
    """A response did not match its request: another byte range, a short or long body, a
    partial response to a request for the whole object. Retried; never returned as data."""


class ServerError(TransientError):
    """The server failed (500, 502, 504 ...)."""


class RetriesExhaustedError(StorageError):
    """A transient failure persisted through every attempt the retry settings allow.

    ``attempts`` is the number of attempts made; ``last_error`` the last failure, also chained
    as ``__cause__``.
    """

    def __init__(self, operation: str, key: str, attempts: int, last: BaseException) -> None:
        self.operation = operation
        self.key = key
        self.attempts = attempts
        self.last_error = last
        if isinstance(last, EndpointUnreachableError):
            hint = "Nothing accepts connections there: check the endpoint and that it is up."
        else:
            hint = "Raise StorageRetriesSettings.max_tries to try longer."
        super().__init__(
            f"{operation} of {key!r} failed after {attempts} attempts; last error: "
            f"{str(last).rstrip('.')}. {hint}"
        )
