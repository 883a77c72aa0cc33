"""The Azure backend against the conformance suite, on Azurite (started by ``tests._azurite``).

Azurite enforces everything the suite checks (If-None-Match: *, If-Match, ranges, pages,
SharedKey signatures, x-ms-source-if-match on copies).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from icechunk_storage import AzureStorage, Storage, azure_storage
from tests._azurite import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer
from tests.conformance import StorageConformance

pytestmark = pytest.mark.azure


class TestAzureStorage(StorageConformance):
    many_keys: ClassVar[int] = 600  # pages of 100 still paginate
    concurrent_writers: ClassVar[int] = 50

    @pytest.fixture
    def storage(self, azurite: AzuriteServer, container: str, azure_isolated: Any) -> Storage:
        storage = azure_storage(
            account=AZURITE_ACCOUNT,
            container=container,
            prefix="conformance/root",
            access_key=AZURITE_KEY,
            config={"endpoint": azurite.blob_endpoint, "allow_http": "true"},
        )
        storage._list_page_size = 100
        return storage

    @pytest.fixture(autouse=True)
    def _bypass(self, azure_admin: Any) -> None:
        self._admin = azure_admin

    async def raw_put(self, storage: Storage, key: str, data: bytes) -> None:
        assert isinstance(storage, AzureStorage)
        blob = self._admin.get_blob_client(storage.container, f"{storage.prefix}/{key}")
        blob.upload_blob(data, overwrite=True)

    async def raw_get(self, storage: Storage, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        assert isinstance(storage, AzureStorage)
        blob = self._admin.get_blob_client(storage.container, f"{storage.prefix}/{key}")
        try:
            return bytes(blob.download_blob().readall())
        except ResourceNotFoundError:
            return None
