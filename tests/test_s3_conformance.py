"""The S3 backend against the conformance suite, on moto (started by ``tests._s3_server``).

Requests go through the recording proxy, which forwards them to moto unchanged except for
one thing moto 5.2 lacks: it enforces ``x-amz-copy-source-if-match`` (moto ignores it), so
conditional copies are really checked.

Two transports: ``TestS3Storage`` reads through the lean transport (the proxy is the
endpoint), ``TestS3StorageBehindAProxy`` through the aiohttp transport (the proxy is an
HTTP forward proxy from ``HTTP_PROXY``, and the endpoint a name that only it resolves).
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


class TestS3StorageBehindAProxy(TestS3Storage):
    many_keys: ClassVar[int] = 60  # the aiohttp transport opens a connection per request

    @pytest.fixture
    def storage(
        self,
        s3_proxy: RecordingProxy,
        bucket: str,
        aws_isolated: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Storage:
        monkeypatch.setenv("HTTP_PROXY", s3_proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        storage = s3_storage(
            bucket=bucket,
            prefix="conformance/proxied",
            endpoint_url=f"http://{s3_proxy.virtual_suffix}:9000",
            allow_http=True,
            region=MOTO_REGION,
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
        )
        storage._list_page_size = 50
        return storage

    async def test_reads_went_through_the_aiohttp_transport(
        self, storage: Storage, s3_proxy: RecordingProxy
    ) -> None:
        from icechunk_storage._transport import peek_transport
        from icechunk_storage._transport._aiohttp import AiohttpTransport

        assert isinstance(storage, S3Storage)
        await storage.put("via-proxy", b"x")
        assert bytes((await storage.get("via-proxy")).data) == b"x"
        clients = storage._loops.peek()
        assert clients is not None
        assert clients.transport is not None
        assert isinstance(peek_transport(clients.transport), AiohttpTransport)
        gets = [r for r in s3_proxy.requests if r.method == "GET" and "via-proxy" in r.path]
        assert gets  # the forward proxy saw the read
