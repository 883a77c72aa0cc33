"""For backend authors: the base class that implements the Storage contract once, over a
few primitives, and the values those primitives exchange.

Subclass :class:`BaseStorage` and write its primitives (its module docstring is the
contract: one request per primitive, paths not keys, native errors translated into
``icechunk_storage``'s error tree); a backend whose every read is one HTTP GET subclasses
:class:`OneGetPerRead` and writes one ``_read`` for the three read primitives. Then subclass
:class:`icechunk_storage.testing.StorageConformance`: the backend is done when it passes.
"""

from ._backend import WRITE_ID_METADATA_KEY, BaseStorage, ListPage, OneGetPerRead
from ._errors import MultipartUploadVanishedError
from ._ranges import resolve_range, split_for_multipart, split_range
from ._storage import Capabilities, Data, GetResult, ObjectInfo, PutMode, VersionInfo

__all__ = [
    "WRITE_ID_METADATA_KEY",
    "BaseStorage",
    "Capabilities",
    "Data",
    "GetResult",
    "ListPage",
    "MultipartUploadVanishedError",
    "ObjectInfo",
    "OneGetPerRead",
    "PutMode",
    "VersionInfo",
    "resolve_range",
    "split_for_multipart",
    "split_range",
]
