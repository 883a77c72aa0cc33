"""icechunk_storage: one async Storage abstraction over S3 (and S3-alikes), GCS, Azure, the
local filesystem and memory, with Icechunk's Python API names and semantics.

Importing this package does no I/O and imports no cloud SDK.
"""

from __future__ import annotations

from ._backend import WRITE_ID_METADATA_KEY, BaseStorage
from ._errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConditionFailedError,
    ConfigurationError,
    ConnectionLostError,
    CredentialsRefreshError,
    InvalidKeyError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    ReadOnlyStorageError,
    RetriesExhaustedError,
    ServerError,
    StorageError,
    StorageTimeoutError,
    ThrottledError,
    TransientError,
)
from ._limits import get_max_concurrent_requests, set_max_concurrent_requests
from ._local import LocalFileSystemStorage, local_filesystem_storage
from ._memory import MemoryStorage, in_memory_storage
from ._ranges import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from ._settings import (
    StorageConcurrencySettings,
    StorageRetriesSettings,
    StorageSettings,
    StorageTimeoutSettings,
)
from ._storage import (
    Capabilities,
    DeleteResult,
    GetResult,
    ListResult,
    ObjectInfo,
    PutMode,
    Storage,
    VersionInfo,
)
from ._wrappers import InstrumentedStorage, LatencyStorage, OperationStats, WrappedStorage

__all__ = [
    "WRITE_ID_METADATA_KEY",
    "AlreadyExistsError",
    "AuthenticationError",
    "BaseStorage",
    "ByteRequest",
    "Capabilities",
    "ConditionFailedError",
    "ConfigurationError",
    "ConnectionLostError",
    "CredentialsRefreshError",
    "DeleteResult",
    "GetResult",
    "InstrumentedStorage",
    "InvalidKeyError",
    "LatencyStorage",
    "LocalFileSystemStorage",
    "ListResult",
    "MemoryStorage",
    "ObjectInfo",
    "ObjectNotFoundError",
    "OffsetByteRequest",
    "OperationStats",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "PutMode",
    "RangeByteRequest",
    "RangeNotSatisfiableError",
    "ReadOnlyStorageError",
    "RetriesExhaustedError",
    "ServerError",
    "Storage",
    "StorageConcurrencySettings",
    "StorageError",
    "StorageRetriesSettings",
    "StorageSettings",
    "StorageTimeoutError",
    "StorageTimeoutSettings",
    "SuffixByteRequest",
    "ThrottledError",
    "TransientError",
    "VersionInfo",
    "WrappedStorage",
    "get_max_concurrent_requests",
    "in_memory_storage",
    "local_filesystem_storage",
    "set_max_concurrent_requests",
]
