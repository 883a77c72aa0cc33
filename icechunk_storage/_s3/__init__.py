"""The S3 family: AWS S3, S3-compatible servers (MinIO ...), Tigris and Cloudflare R2.

Importing this package loads no SDK: aiobotocore, botocore and aiohttp are imported on the
first request.
"""

from __future__ import annotations

from ._factories import r2_storage, s3_storage, tigris_storage
from ._options import ChecksumAlgorithm, S3Options
from ._storage import S3Storage

__all__ = [
    "ChecksumAlgorithm",
    "S3Options",
    "S3Storage",
    "r2_storage",
    "s3_storage",
    "tigris_storage",
]
