"""The S3 backend against the conformance suite, on moto (started by ``tests._s3_server``).

Requests go through the recording proxy, which forwards them to moto unchanged except for
one thing moto 5.2 lacks: it enforces ``x-amz-copy-source-if-match`` (moto ignores it), so
conditional copies are really checked.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from icechunk_storage import S3Storage, Storage, s3_storage
from tests._s3_proxy import RecordingProxy
from tests._s3_server import MOTO_KEY, MOTO_REGION
from tests.conformance import StorageConformance

pytestmark = pytest.mark.s3


class TestS3Storage(StorageConformance):
    many_keys: ClassVar[int] = 120  # moto does ~200 requests/s; pages of 50 still paginate
    concurrent_writers: ClassVar[int] = 50
    identical_rewrite_changes_version: ClassVar[bool] = False  # the ETag is the content's MD5

    @pytest.fixture
    def storage(self, s3_proxy: RecordingProxy, bucket: str, aws_isolated: Any) -> Storage:
        storage = s3_storage(
            bucket=bucket,
            prefix="conformance/root",
            endpoint_url=s3_proxy.url,
            allow_http=True,
            force_path_style=True,
            region=MOTO_REGION,
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
        )
        storage._list_page_size = 50
        return storage

    @pytest.fixture(autouse=True)
    def _bypass(self, s3_admin: Any) -> None:
        self._admin = s3_admin

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, S3Storage)
        self._admin.put_object(Bucket=storage.bucket, Key=f"{storage.prefix}/{key}", Body=data)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        assert isinstance(storage, S3Storage)
        try:
            response = self._admin.get_object(Bucket=storage.bucket, Key=f"{storage.prefix}/{key}")
        except self._admin.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())
