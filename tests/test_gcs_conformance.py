"""The GCS backend against the conformance suite, on fake-gcs-server (``tests._gcs_server``).

Requests go through the recording proxy, which forwards them unchanged except that it
enforces the two preconditions fake-gcs-server 1.54 ignores: ``ifSourceGenerationMatch`` on
rewrites (conditional copy) and ``ifGenerationMatch`` on resumable uploads. Single-request
writes are ``uploadType=multipart``, on which the server itself enforces ``ifGenerationMatch``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, ClassVar
from urllib.parse import quote

import pytest

from icechunk_storage import GcsStorage, Storage, gcs_storage
from tests._gcs_server import FakeGcsServer, GcsProxy
from tests.conformance import StorageConformance


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TestGcsStorage(StorageConformance):
    many_keys: ClassVar[int] = 600  # pages of 100 still paginate

    @pytest.fixture
    def storage(
        self, gcs_proxy: GcsProxy, gcs_bucket: str, gcs_server: FakeGcsServer, gcp_isolated: Any
    ) -> Storage:
        self._server = gcs_server
        storage = gcs_storage(
            bucket=gcs_bucket,
            prefix="conformance/root",
            anonymous=True,
            config={"google_base_url": gcs_proxy.url, "allow_http": "true"},
        )
        storage._list_page_size = 100
        return storage

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, GcsStorage)
        name = quote(f"{storage.prefix}/{key}", safe="")
        request = urllib.request.Request(
            f"{self._server.url}/upload/storage/v1/b/{storage.bucket}/o?uploadType=media&name={name}",
            data=data,
            method="POST",
        )
        with _opener().open(request, timeout=10) as response:
            json.load(response)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        assert isinstance(storage, GcsStorage)
        name = quote(f"{storage.prefix}/{key}", safe="")
        url = f"{self._server.url}/storage/v1/b/{storage.bucket}/o/{name}?alt=media"
        try:
            with _opener().open(url, timeout=10) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
