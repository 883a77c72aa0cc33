"""Bad input (issue 15, item 3): one set of key rules on every backend, a fuzz that nothing
outside a local root is created or read, clear answers for bad local roots, and failures
that are fast and named: a refused connection, a rejected credential."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icechunk_storage import (
    AuthenticationError,
    ConfigurationError,
    EndpointUnreachableError,
    InvalidKeyError,
    RetriesExhaustedError,
    StorageError,
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_storage._keys import MAX_KEY_BYTES, MAX_SEGMENT_BYTES
from tests._azurite import AZURITE_ACCOUNT, AzuriteServer
from tests._gcs_server import GcsProxy
from tests._s3_proxy import RecordingProxy
from tests._s3_server import MOTO_KEY, MOTO_REGION

UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1


def _remote_storages(endpoint: str = UNREACHABLE) -> dict[str, Any]:
    """One storage per cloud backend, pointed at ``endpoint``."""
    return {
        "s3": s3_storage(
            bucket="bkt",
            prefix="p",
            region="us-east-1",
            endpoint_url=endpoint,
            allow_http=True,
            force_path_style=True,
            access_key_id="AKIAKEY",
            secret_access_key="secret-key",
        ),
        "gcs": gcs_storage(
            bucket="bkt",
            prefix="p",
            anonymous=True,
            config={"google_base_url": endpoint, "allow_http": "true"},
        ),
        "azure": azure_storage(
            account="acct",
            container="box",
            prefix="p",
            access_key="a2V5",
            config={"endpoint": f"{endpoint}/acct", "allow_http": "true"},
        ),
    }


def _every_storage(tmp_path: Path) -> dict[str, Any]:
    return {
        "memory": in_memory_storage(),
        "local": local_filesystem_storage(tmp_path / "root"),
        **_remote_storages(),
    }


BAD_KEYS = [
    "/abs",
    "a/../b",
    "..",
    "a//b",
    "a\x00b",
    "a\\b",
    "\ud800",
    "ok/\udc80",
    "s" * (MAX_SEGMENT_BYTES + 1),
    "é" * 128,  # 256 bytes in UTF-8
    "a/" * 2000 + "x",  # 2,000 segments
    ("abcdefghi/" * 103)[:MAX_KEY_BYTES] + "x",  # 1,025 bytes
]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda k: repr(k)[:30])
async def test_bad_keys_are_refused_the_same_on_every_backend(tmp_path: Path, bad: str) -> None:
    """Refused before any I/O (the cloud storages point at a closed port: a request would
    be a connection error, not InvalidKeyError)."""
    for storage in _every_storage(tmp_path).values():
        calls = [
            storage.get(bad),
            storage.head(bad),
            storage.put(bad, b"x"),
            storage.delete(bad),
            storage.copy("ok", bad),
            _drain(storage.list(bad)),
            storage.list_dir(bad),
        ]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                await call
        await storage.aclose()
    assert not (tmp_path / "root").exists(), "a refused key created something"


async def _drain(listing: Any) -> list[Any]:
    return [item async for item in listing]


def test_limits_hold_exactly_at_the_boundary() -> None:
    storage = in_memory_storage()

    async def round_trip(key: str) -> None:
        await storage.put(key, b"x")
        assert bytes((await storage.get(key)).data) == b"x"

    asyncio.run(round_trip("s" * MAX_SEGMENT_BYTES))
    asyncio.run(round_trip("é" * 127))
    asyncio.run(round_trip(("abcdefghi/" * 103)[: MAX_KEY_BYTES - 1] + "x"))


async def test_the_prefix_counts_toward_the_key_limit() -> None:
    storage = _remote_storages()["s3"]
    near = "k/" * 510 + "kkk"  # 1,023 bytes: fits alone, not under "p/"
    with pytest.raises(InvalidKeyError, match="with the prefix"):
        await storage.get(near)


async def test_list_shares_the_rules_of_get(tmp_path: Path) -> None:
    local = local_filesystem_storage(tmp_path / "root")
    await local.put("abs/k", b"x")
    for call in (local.get("/abs"), _drain(local.list("/abs")), local.list_dir("/abs")):
        with pytest.raises(InvalidKeyError, match="absolute"):
            await call
    # The root is still "", "/" and the trailing-slash forms still work.
    assert [i.key async for i in local.list("/")] == ["abs/k"]
    assert [i.key async for i in local.list("abs/")] == ["abs/k"]


# --- the fuzz: nothing outside the local root ------------------------------------------------

_ALPHABET = st.sampled_from(
    ["a", "b", ".", "..", "/", "\\", "~", "\x00", "\n", "é", "\ud800", "\udc80", "%2e", ":", " "]
)
_KEYS = st.one_of(
    st.lists(_ALPHABET, max_size=12).map("".join),
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "a", "", "~", "/"]), max_size=8).map("/".join),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=_KEYS, other=_KEYS)
def test_fuzz_nothing_outside_the_local_root_is_created_or_read(
    tmp_path: Path, key: str, other: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_bytes(b"SECRET")
    root = tmp_path / "root"
    before = _tree(tmp_path, exclude=root)

    async def run() -> None:
        storage = local_filesystem_storage(root)
        operations: list[Callable[[], Any]] = [
            lambda: storage.put(key, b"fuzz"),
            lambda: storage.put(key, b"fuzz", mode="create"),
            lambda: storage.get(key),
            lambda: storage.head(key),
            lambda: storage.copy(key, other),
            lambda: _drain(storage.list(key)),
            lambda: storage.list_dir(key),
            lambda: storage.delete(key),
            lambda: storage.get_many([(key, None), (other, None)], missing_ok=True),
        ]
        for operation in operations:
            try:
                result = await operation()
            except RetriesExhaustedError:
                raise  # the local backend has nothing transient to exhaust
            except StorageError:  # typed, never a raw OSError/UnicodeError/RecursionError
                continue
            assert b"SECRET" not in repr(result).encode("utf-8", "replace")

    asyncio.run(run())
    assert _tree(tmp_path, exclude=root) == before
    assert (outside / "secret").read_bytes() == b"SECRET"


def _tree(base: Path, exclude: Path) -> set[str]:
    found: set[str] = set()
    for directory, names, files in os.walk(base):
        if Path(directory) == exclude or exclude in Path(directory).parents:
            continue
        found.update(os.path.join(directory, n) for n in [*names, *files])
    found.discard(str(exclude))
    return found


# --- local roots that cannot be directories --------------------------------------------------


def test_a_root_that_is_a_file_is_refused_at_construction(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigurationError, match="is a file"):
        local_filesystem_storage(file)
    with pytest.raises(ConfigurationError, match="lies under"):
        local_filesystem_storage(file / "sub" / "dir")


def test_file_urls_are_refused_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"pass '{tmp_path}/data'"):
        local_filesystem_storage(f"file://{tmp_path}/data")
    with pytest.raises(ConfigurationError, match="not a URL"):
        local_filesystem_storage("s3://bucket/prefix")


async def test_a_tilde_path_means_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    storage = local_filesystem_storage("~/data")
    assert storage.root == str(tmp_path / "data")
    await storage.put("k", b"v")
    assert (tmp_path / "data" / "k").read_bytes() == b"v"
    with pytest.raises(ConfigurationError, match="Cannot expand"):
        local_filesystem_storage("~no-such-user-here-xyz/data")


# --- fast, named failures ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure"])
async def test_connection_refused_fails_fast_naming_the_endpoint(
    backend: str, aws_isolated: Path
) -> None:
    """Default settings: at most 3 attempts for a refused connection, so well under 3 s
    (not the 36 s the whole retry budget took), and the message names host:port."""
    storage = _remote_storages()[backend]
    for operation in (storage.get("k"), storage.put("k", b"v")):
        started = time.monotonic()
        with pytest.raises(RetriesExhaustedError) as raised:
            await operation
        assert time.monotonic() - started < 3
        assert isinstance(raised.value.__cause__, EndpointUnreachableError)
        assert raised.value.attempts == 3
        message = str(raised.value)
        assert "127.0.0.1:1" in message
        assert "check the endpoint" in message
        assert "max_tries" not in message
    await storage.aclose()


async def test_a_rejected_s3_credential_fails_at_once(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    for code in ("InvalidAccessKeyId", "ExpiredToken", "SignatureDoesNotMatch"):
        s3_proxy.clear()
        s3_proxy.inject("status", status=403, code=code, times=100)
        storage = s3_storage(
            bucket=bucket,
            prefix="p",
            region=MOTO_REGION,
            endpoint_url=s3_proxy.url,
            allow_http=True,
            force_path_style=True,
            access_key_id=MOTO_KEY,
            secret_access_key=MOTO_KEY,
        )
        for operation in (storage.get("k"), storage.put("k", b"v")):
            with pytest.raises(AuthenticationError, match=code):
                await operation
        await storage.aclose()
        assert len(s3_proxy.recorded()) == 2  # one request each: no retry storm


async def test_a_rejected_gcs_token_fails_at_once(gcs_proxy: GcsProxy, gcs_bucket: str) -> None:
    gcs_proxy.required_bearer = "the-right-token"
    storage = gcs_storage(
        bucket=gcs_bucket,
        prefix="p",
        bearer_token="an-expired-token",
        config={"google_base_url": gcs_proxy.url, "allow_http": "true"},
    )
    for operation in (storage.get("k"), storage.put("k", b"v")):
        with pytest.raises(AuthenticationError):
            await operation
    await storage.aclose()
    assert len(gcs_proxy.recorded()) == 2
    gcs_proxy.required_bearer = None


async def test_a_rejected_azure_key_fails_at_once(azurite: AzuriteServer, container: str) -> None:
    storage = azure_storage(
        account=AZURITE_ACCOUNT,
        container=container,
        prefix="p",
        access_key="d3Jvbmcta2V5LXRoYXQtaXMtYmFzZTY0LWJ1dC1ub3QtdGhlLXJpZ2h0LW9uZQ==",
        config={"endpoint": azurite.blob_endpoint, "allow_http": "true"},
    )
    started = time.monotonic()
    for operation in (storage.get("k"), storage.put("k", b"v")):
        with pytest.raises(AuthenticationError):
            await operation
    assert time.monotonic() - started < 3
    await storage.aclose()
