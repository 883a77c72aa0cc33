"""The conformance suite now ships as ``icechunk_storage.testing``; re-exported for old imports."""

from icechunk_storage.testing import ReadOnlyStorageConformance, StorageConformance

__all__ = ["ReadOnlyStorageConformance", "StorageConformance"]
