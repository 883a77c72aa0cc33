"""Azure Blob Storage (and Azurite).

Importing this package loads no SDK: azure-storage-blob and aiohttp are imported on the first
request.
"""

from __future__ import annotations

from ._factories import azure_storage
from ._storage import AzureStorage

__all__ = ["AzureStorage", "azure_storage"]
