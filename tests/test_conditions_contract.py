"""Stores that do not honour conditional writes, against the repository's contract.

moto enforces ``If-None-Match``/``If-Match``; the stores that do not are moto behind
``ConditionsProxy`` (from the command's tests), which strips those headers ("ignore") or
answers them with 501 NotImplemented ("reject"), as S3-compatible stores without conditional
writes do. The proxy's recordings show that our client did send the conditions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from icechunk_storage import (
    ConfigurationError,
    Repository,
    RepositoryConfig,
    StorageSettings,
    s3_storage,
)
from tests._s3_server import MOTO_KEY, MOTO_REGION, MotoServer
from tests.test_cli_servers import ConditionsProxy

pytestmark = pytest.mark.s3

UNSAFE = StorageSettings(unsafe_use_conditional_create=False, unsafe_use_conditional_update=False)


@pytest.fixture
def store(moto_server: MotoServer, s3_admin: Any) -> Iterator[tuple[ConditionsProxy, str]]:
    bucket = f"cond-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    proxy = ConditionsProxy(moto_server.url)
    proxy.start()
    try:
        yield proxy, bucket
    finally:
        proxy.stop()


def _storage(proxy: ConditionsProxy, bucket: str, prefix: str) -> Any:
    return s3_storage(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=proxy.url,
        allow_http=True,
        force_path_style=True,
        region=MOTO_REGION,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
    )


@pytest.mark.parametrize("mode", ["ignore", "reject"])
async def test_with_default_settings_a_store_without_conditions_is_refused(
    store: tuple[ConditionsProxy, str], mode: str
) -> None:
    proxy, bucket = store
    proxy.mode = mode
    storage = _storage(proxy, bucket, f"repo-{mode}")
    with pytest.raises(ConfigurationError, match="unsafe_use_conditional_create") as raised:
        await Repository.create_async(storage)
    assert ("ignores" if mode == "ignore" else "rejects") in str(raised.value)
    assert await storage.exists("repo") is False  # nothing was created
    assert [info.key async for info in storage.list()] == []  # the probe is gone too
    sent = {name for r in proxy.requests for name in r.headers}
    assert "if-none-match" in sent or proxy.stripped  # we did ask for the conditions
    await storage.aclose()


async def test_the_unsafe_settings_work_there_and_their_loss_is_real(
    store: tuple[ConditionsProxy, str],
) -> None:
    proxy, bucket = store
    proxy.mode = "ignore"
    storage = _storage(proxy, bucket, "repo-unsafe")
    config = RepositoryConfig(storage=UNSAFE)
    repo = await Repository.create_async(storage, config)
    session = await repo.writable_session_async("main")
    await session.storage.put("zarr.json", b"{}")
    await session.commit_async("first")
    # The documented loss: two writers that both read version v and both write "if still
    # at v" both succeed on such a store; the first one's value is gone without an error.
    raw = storage.with_settings(UNSAFE)
    version = await raw.put("counter", b"0")
    await raw.put("counter", b"writer A", mode=version)
    await raw.put("counter", b"writer B", mode=version)  # would be refused with conditions
    assert bytes((await raw.get("counter")).data) == b"writer B"
    assert set(proxy.stripped) <= {"if-none-match", "if-match"}
    await storage.aclose()
