"""Google Cloud Storage: ``gcs_storage`` and ``GcsStorage``.

Importing this package loads no SDK: aiohttp and gcloud-aio-auth are imported on the first
request that needs them.
"""

from __future__ import annotations

from ._config import GcsEndpoint
from ._factories import gcs_storage
from ._storage import GcsStorage

__all__ = ["GcsEndpoint", "GcsStorage", "gcs_storage"]
