"""Azure-specific tests: the factory, signing, auth against Azurite, block uploads.

Azurite checks SharedKey signatures and SAS permissions and expiry, so the auth tests run
against it. The SharedKey signature is compared with the one azure-storage-blob's own
pipeline computes for the same request.
"""

from __future__ import annotations

import logging
import pickle
import sys
import types
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from icechunk_storage import (
    AlreadyExistsError,
    AuthenticationError,
    AzureCredentials,
    AzureRefreshableCredential,
    AzureStorage,
    ConfigurationError,
    ConnectionLostError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeByteRequest,
    RetriesExhaustedError,
    StorageConcurrencySettings,
    StorageRetriesSettings,
    StorageSettings,
    azure_storage,
)
from icechunk_storage._azure import _auth
from icechunk_storage._azure._auth import apply_auth, shared_key_signature
from icechunk_storage._errors import ResponseIntegrityError
from icechunk_storage._transport import MockResponse, MockTransport, TransportConfig, get_transport
from tests._azurite import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer

WRONG_KEY = "d3Jvbmcta2V5LXRoYXQtaXMtYmFzZTY0LWJ1dC1ub3QtdGhlLXJpZ2h0LW9uZQ=="


def _storage(azurite: AzuriteServer, container: str, **kwargs: Any) -> AzureStorage:
    kwargs.setdefault("prefix", "p")
    return azure_storage(
        account=AZURITE_ACCOUNT,
        container=container,
        config={"endpoint": azurite.blob_endpoint, "allow_http": "true"},
        **kwargs,
    )


def _sas(container: str, *, read_only: bool, expiry: datetime) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    permission = ContainerSasPermissions(
        read=True, list=True, write=not read_only, create=not read_only, delete=not read_only
    )
    return str(
        generate_container_sas(
            AZURITE_ACCOUNT,
            container,
            account_key=AZURITE_KEY,
            permission=permission,
            expiry=expiry,
            start=datetime.now(UTC) - timedelta(minutes=5),
        )
    )


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, from every logger (azure-core's included)."""
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "azure.core", "azure.storage", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _assert_no_secret(secret: str, *texts: str, logs: pytest.LogCaptureFixture) -> None:
    assert any(r.name.startswith("azure.") for r in logs.records)  # the SDK path logged
    for text in texts:
        assert secret not in text
    for record in logs.records:
        assert secret not in record.getMessage()
        assert secret not in str(record.args)


def _signature_part(sas: str) -> str:
    from urllib.parse import parse_qs

    return parse_qs(sas)["sig"][0]


# --- the factory ---------------------------------------------------------------------------


def test_both_spellings_build_the_same_storage() -> None:
    code = azure_storage(account="acct", container="box", prefix="p", access_key="a2V5")
    docs = azure_storage(account_name="acct", container="box", prefix="p", account_key="a2V5")
    assert code == docs
    assert code.location.origin == "https://acct.blob.core.windows.net"
    bearer = azure_storage(account="acct", container="box", prefix="p", bearer_token="t")
    token = azure_storage(account_name="acct", container="box", prefix="p", access_token="t")
    assert bearer == token
    assert isinstance(token.credentials, AzureCredentials.Static)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"account": "acct", "account_name": "acct"}, "account= and account_name="),
        (
            {"account": "acct", "access_key": "a2V5", "account_key": "a2V5"},
            "access_key= and account_key=",
        ),
        (
            {"account": "acct", "bearer_token": "t", "access_token": "t"},
            "bearer_token= and access_token=",
        ),
    ],
)
def test_both_spellings_of_one_argument_are_refused(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        azure_storage(container="box", prefix="p", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs account="),
        ({"account": "acct", "access_key": "a2V5", "sas_token": "sv=1"}, "exactly one of"),
        ({"account": "acct", "account_key": "a2V5", "access_token": "t"}, "exactly one of"),
        ({"account": "acct", "anonymous": True, "sas_token": "sv=1"}, "Conflicting"),
        ({"account": "acct", "from_env": False}, "from_env=False"),
        ({"account": "Bad_Account"}, "account must be"),
        ({"account": "acct", "config": {"nope": "1"}}, "Valid keys: use_emulator"),
        ({"account": "acct", "config": {"use_emulator": "maybe"}}, "'true' or 'false'"),
        ({"account": "acct", "config": {"endpoint": "http://h:1"}}, "allow_http"),
        ({"account": "acct", "config": {"endpoint": "https://h/?sv=x"}}, "without credentials"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        azure_storage(container="box", prefix="p", **kwargs)


def test_bad_container_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="container must be"):
        azure_storage(account="acct", container="a/b", prefix="p")


def test_emulator_endpoint_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURITE_BLOB_STORAGE_URL", raising=False)
    storage = azure_storage(
        account="devstoreaccount1", container="box", prefix="p", config={"use_emulator": "true"}
    )
    assert storage.location.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://localhost:12345")
    storage = azure_storage(
        account="devstoreaccount1",
        container="box",
        prefix="p",
        config={"azure_storage_use_emulator": True},
    )
    assert storage.location.account_url == "http://localhost:12345/devstoreaccount1"


def test_repr_and_pickle_hide_nothing_but_show_no_secret() -> None:
    storage = azure_storage(
        account="acct", container="box", prefix="p", access_key="c2VjcmV0LWtleQ=="
    )
    assert "c2VjcmV0LWtleQ==" not in repr(storage)
    assert "az://acct/box/p" in repr(storage)
    assert pickle.loads(pickle.dumps(storage)) == storage


# --- signing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        (
            "GET",
            "http://127.0.0.1:1/devstoreaccount1/box/a/b%20c",
            {"x-ms-date": "Mon, 01 Jan 2024 00:00:00 GMT", "x-ms-version": "2025-01-05"},
        ),
        (
            "PUT",
            "https://acct.blob.core.windows.net/box/k?comp=block&blockid=YWJj%2BZA%3D%3D",
            {
                "x-ms-date": "Mon, 01 Jan 2024 00:00:00 GMT",
                "x-ms-version": "2025-01-05",
                "x-ms-meta-icechunk_write_id": "abc",
                "x-ms-meta-Zeta": "1",
                "x-ms-blob-type": "BlockBlob",
                "if-none-match": "*",
                "content-length": "12",
                "x-ms-range": "bytes=0-9",
            },
        ),
    ],
)
def test_shared_key_signature_matches_the_sdk_pipeline(
    method: str, url: str, headers: dict[str, str]
) -> None:
    """The header our plain request gets equals the one the SDK's pipeline puts on an
    azure-core HttpRequest for the same request."""
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.pipeline.transport import HttpRequest
    from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

    request = HttpRequest(method, url, headers=dict(headers))
    SharedKeyCredentialPolicy(AZURITE_ACCOUNT, AZURITE_KEY).on_request(  # type: ignore[no-untyped-call]
        PipelineRequest(request, PipelineContext(None))
    )
    ours = shared_key_signature(AZURITE_ACCOUNT, AZURITE_KEY, method, url, dict(headers))
    assert ours == request.headers["Authorization"]
    assert ours.startswith(f"SharedKey {AZURITE_ACCOUNT}:")
    changed = shared_key_signature(AZURITE_ACCOUNT, AZURITE_KEY, "DELETE", url, dict(headers))
    assert changed != ours


@pytest.mark.parametrize(
    ("method", "url", "extra"),
    [
        ("GET", "https://acct.blob.core.windows.net/box/p/chunks/c%C3%A9", {}),
        ("GET", "http://127.0.0.1:1/acct/box/k", {"x-ms-range": "bytes=5-", "if-match": '"e"'}),
        ("HEAD", "https://acct.blob.core.windows.net/box/k", {"if-none-match": '"0x8D"'}),
        ("DELETE", "https://acct.blob.core.windows.net/box/k", {"content-length": "0"}),
        (
            "GET",
            "https://acct.blob.core.windows.net/box?restype=container&comp=list&prefix=a%2Fb",
            {},
        ),
    ],
)
def test_fast_shared_key_path_equals_the_sdk_policy(
    method: str, url: str, extra: dict[str, str]
) -> None:
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.pipeline.transport import HttpRequest
    from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

    headers = {"x-ms-date": "Tue, 02 Jan 2024 03:04:05 GMT", "x-ms-version": "2025-01-05"}
    headers.update(extra)
    request = HttpRequest(method, url, headers=dict(headers))
    SharedKeyCredentialPolicy("acct", AZURITE_KEY).on_request(  # type: ignore[no-untyped-call]
        PipelineRequest(request, PipelineContext(None))
    )
    assert (
        _auth._fast_signature("acct", AZURITE_KEY, method, url, headers)
        == (request.headers["Authorization"])
    )


def test_fast_path_headers_sort_as_the_sdk_collates_them() -> None:
    from azure.storage.blob._shared.authentication import _storage_header_sort

    pairs = [(name, "v") for name in reversed(_auth._FAST_XMS)]
    assert [name for name, _ in _storage_header_sort(pairs)] == list(_auth._FAST_XMS)


def test_sas_and_bearer_signing() -> None:
    headers: dict[str, str] = {}
    assert apply_auth(("sas", "sv=1&sig=x"), "a", "GET", "https://h/c/k", headers) == (
        "https://h/c/k?sv=1&sig=x"
    )
    assert headers == {}
    assert apply_auth(("sas", "sv=1"), "a", "GET", "https://h/c?comp=list", headers).endswith(
        "?comp=list&sv=1"
    )
    apply_auth(("bearer", "tok"), "a", "GET", "https://h/c/k", headers)
    assert headers == {"authorization": "Bearer tok"}


def test_a_bad_account_key_is_an_authentication_error_without_the_key() -> None:
    with pytest.raises(AuthenticationError) as info:
        shared_key_signature("acct", "not base64 !", "GET", "https://h/c/k", {})
    assert "not base64" not in str(info.value)


# --- auth against Azurite ------------------------------------------------------------------


async def test_wrong_key_is_an_authentication_error(
    azurite: AzuriteServer, container: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    storage = _storage(azurite, container, access_key=WRONG_KEY)
    messages = []
    for call in (storage.get("k"), storage.put("k", b"x"), _list(storage)):
        with pytest.raises(AuthenticationError) as info:
            await call
        messages.append(str(info.value))
    await storage.aclose()
    assert "403" in messages[0]
    _assert_no_secret(WRONG_KEY, *messages, logs=debug_logs)


async def test_read_only_sas_write_is_permission_denied(
    azurite: AzuriteServer,
    container: str,
    azure_admin: Any,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    azure_admin.get_blob_client(container, "p/k").upload_blob(b"data")
    sas = _sas(container, read_only=True, expiry=datetime.now(UTC) + timedelta(hours=1))
    storage = _storage(azurite, container, sas_token=sas)
    assert bytes((await storage.get("k")).data) == b"data"
    assert [i.key async for i in storage.list()] == ["k"]
    with pytest.raises(PermissionDeniedError) as info:
        await storage.put("k2", b"x")
    with pytest.raises(PermissionDeniedError) as delete_info:
        await storage.delete("k")
    await storage.aclose()
    _assert_no_secret(
        _signature_part(sas), str(info.value), str(delete_info.value), logs=debug_logs
    )


async def test_full_sas_reads_writes_copies_and_lists(
    azurite: AzuriteServer, container: str
) -> None:
    sas = _sas(container, read_only=False, expiry=datetime.now(UTC) + timedelta(hours=1))
    storage = _storage(azurite, container, sas_token="?" + sas)
    version = await storage.put("a", b"1", mode="create")
    await storage.copy("a", "b", if_version=version)
    assert bytes((await storage.get("b")).data) == b"1"
    assert sorted([i.key async for i in storage.list()]) == ["a", "b"]
    await storage.aclose()


async def test_expired_sas_is_a_clear_error(
    azurite: AzuriteServer, container: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    sas = _sas(container, read_only=False, expiry=datetime.now(UTC) - timedelta(minutes=1))
    storage = _storage(azurite, container, sas_token=sas)
    with pytest.raises(AuthenticationError, match="SAS token expired at") as info:
        await storage.get("k")
    await storage.aclose()
    # Refreshable SAS are not pre-checked: the server's refusal must be as clear.
    refreshable = _storage(azurite, container, get_credentials=_ExpiredSas(sas))
    with pytest.raises(AuthenticationError, match="SAS token is valid") as server_info:
        await refreshable.get("k")
    with pytest.raises(AuthenticationError, match="SAS token is valid") as list_info:
        await _list(refreshable)
    await refreshable.aclose()
    _assert_no_secret(
        _signature_part(sas),
        str(info.value),
        str(server_info.value),
        str(list_info.value),
        logs=debug_logs,
    )


class _ExpiredSas:
    def __init__(self, sas: str) -> None:
        self.sas = sas

    def __call__(self) -> AzureRefreshableCredential.SasToken:
        return AzureRefreshableCredential.SasToken(self.sas)


class _Key:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> AzureRefreshableCredential.AccessKey:
        self.calls += 1
        return AzureRefreshableCredential.AccessKey(
            AZURITE_KEY, expires_after=datetime.now(UTC) + timedelta(hours=1)
        )


async def test_refreshable_key(azurite: AzuriteServer, container: str) -> None:
    callback = _Key()
    storage = _storage(azurite, container, get_credentials=callback)
    await storage.put("r", b"refreshed")
    assert bytes((await storage.get("r")).data) == b"refreshed"
    assert [i.key async for i in storage.list()] == ["r"]
    assert callback.calls == 1
    await storage.aclose()


async def test_anonymous_is_refused_by_a_private_container(
    azurite: AzuriteServer, container: str
) -> None:
    storage = _storage(azurite, container, anonymous=True)
    with pytest.raises(AuthenticationError, match="anonymous"):
        await storage.get("k")
    await storage.aclose()


@pytest.mark.parametrize("variable", ["connection_string", "key", "sas", "emulator"])
async def test_from_env(
    azurite: AzuriteServer,
    container: str,
    azure_isolated: None,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    config: dict[str, str] = {"endpoint": azurite.blob_endpoint, "allow_http": "true"}
    if variable == "connection_string":
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    elif variable == "key":
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    elif variable == "sas":
        sas = _sas(container, read_only=False, expiry=datetime.now(UTC) + timedelta(hours=1))
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    else:  # Icechunk's CI: use_emulator and nothing else means Azurite's well-known key
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", azurite.url)
        config = {"use_emulator": "true"}
    storage = azure_storage(
        account=AZURITE_ACCOUNT, container=container, prefix="env", config=config
    )
    await storage.put("k", b"env")
    assert bytes((await storage.get("k")).data) == b"env"
    await storage.aclose()


def test_from_env_without_anything_says_what_to_set(
    azure_isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_identity(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("azure.identity"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_identity)
    with pytest.raises(AuthenticationError, match="AZURE_STORAGE_CONNECTION_STRING"):
        _auth.env_credentials("acct", emulator=False)


# --- the SDK client, block uploads ---------------------------------------------------------


async def test_sdk_retries_are_off(azurite: AzuriteServer, container: str) -> None:
    storage = _storage(azurite, container, access_key=AZURITE_KEY)
    client = storage._loops.get().container()
    assert getattr(client._config.retry_policy, "total_retries", None) == 0
    await storage.aclose()


def _blocks_settings() -> StorageSettings:
    return StorageSettings(
        minimum_size_for_multipart_upload=1024,
        concurrency=StorageConcurrencySettings(ideal_concurrent_request_size=1000),
    )


async def test_block_upload_is_conditional(
    azurite: AzuriteServer, container: str, azure_admin: Any
) -> None:
    storage = _storage(azurite, container, access_key=AZURITE_KEY, settings=_blocks_settings())
    data = bytes(range(256)) * 20
    version = await storage.put("big", data, mode="create", content_type="app/x")
    blocks = azure_admin.get_blob_client(container, "p/big").get_block_list()[0]
    assert len(blocks) == 6
    info = await storage.head("big")
    assert info.size == len(data)
    assert info.content_type == "app/x"
    with pytest.raises(AlreadyExistsError):
        await storage.put("big", data, mode="create")
    new = await storage.put("big", data[::-1], mode=version)
    with pytest.raises(PreconditionFailedError):
        await storage.put("big", data, mode=version)
    assert bytes((await storage.get("big")).data) == data[::-1]
    assert (await storage.head("big")).version == new
    await storage.aclose()


async def test_lost_block_list_response_is_recovered_by_read_back(
    azurite: AzuriteServer, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _storage(azurite, container, access_key=AZURITE_KEY, settings=_blocks_settings())
    real = AzureStorage._multipart_complete
    calls = 0

    async def lose_first_response(self: AzureStorage, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(self, *args, **kwargs)
        if calls == 1:
            raise ConnectionLostError("the response was lost")
        return result

    monkeypatch.setattr(AzureStorage, "_multipart_complete", lose_first_response)
    data = b"x" * 3000
    version = await storage.put("lost", data, mode="create")
    assert calls == 2  # the retry found the blocks committed, the read-back found our id
    assert (await storage.head("lost")).version == version
    await storage.aclose()


async def _list(storage: AzureStorage) -> list[str]:
    return [i.key async for i in storage.list()]


# --- bearer tokens and DefaultAzureCredential ----------------------------------------------


async def test_bearer_token_is_sent_on_both_request_paths() -> None:
    """Azurite takes OAuth only over HTTPS, so a local server records what is sent."""
    from aiohttp import web

    seen: list[tuple[str, str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.query_string, request.headers.get("Authorization")))
        if request.query.get("comp") == "list":
            body = (
                '<?xml version="1.0" encoding="utf-8"?><EnumerationResults>'
                "<Blobs></Blobs><NextMarker/></EnumerationResults>"
            )
            return web.Response(body=body.encode(), content_type="application/xml")
        return web.Response(body=b"data", headers={"ETag": '"e"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        storage = azure_storage(
            account_name="acct",
            container="box",
            prefix="p",
            access_token="the-token",
            config={"endpoint": f"http://127.0.0.1:{port}/acct", "allow_http": "true"},
        )
        assert bytes((await storage.get("k")).data) == b"data"
        assert [i.key async for i in storage.list()] == []
        await storage.aclose()
    finally:
        await runner.cleanup()
    assert [auth for _, auth in seen] == ["Bearer the-token", "Bearer the-token"]
    assert "comp=list" in seen[1][0]


class _FakeToken:
    token = "identity-token"
    expires_on = 4_000_000_000


class _FakeDefaultAzureCredential:
    scopes: ClassVar[list[str]] = []

    def get_token(self, *scopes: str) -> _FakeToken:
        self.scopes.extend(scopes)
        return _FakeToken()


def test_default_azure_credential_goes_through_the_refresher(
    azure_isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = types.ModuleType("azure.identity")
    identity.DefaultAzureCredential = _FakeDefaultAzureCredential  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.identity", identity)
    monkeypatch.setattr(_auth, "_identity", None)
    credentials = _auth.env_credentials("acct", emulator=False)
    assert isinstance(credentials, AzureCredentials.Refreshable)
    assert credentials.get_credentials is _auth.default_azure_token
    token = _auth.default_azure_token()
    assert token.bearer == "identity-token"
    assert token.expires_after == datetime.fromtimestamp(4_000_000_000, UTC)
    assert _FakeDefaultAzureCredential.scopes == ["https://storage.azure.com/.default"]


async def test_lost_put_blob_response_is_recovered_by_read_back(
    azurite: AzuriteServer, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry of a conditional Put Blob whose response was lost trips its own condition
    (409 BlobAlreadyExists); the write id read back proves the write was ours."""
    storage = _storage(azurite, container, access_key=AZURITE_KEY)
    real = AzureStorage._put_object
    calls = 0

    async def lose_first_response(self: AzureStorage, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(self, *args, **kwargs)
        if calls == 1:
            raise ConnectionLostError("the response was lost")
        return result

    monkeypatch.setattr(AzureStorage, "_put_object", lose_first_response)
    version = await storage.put("once", b"1", mode="create")
    assert calls == 2
    assert (await storage.head("once")).version == version
    with pytest.raises(AlreadyExistsError):  # somebody else's object is not taken for ours
        await storage.put("once", b"2", mode="create")
    await storage.aclose()


# --- the shared transport ------------------------------------------------------------------


async def test_aclose_closes_only_this_storages_transport(
    azurite: AzuriteServer, container: str
) -> None:
    storage = _storage(azurite, container, access_key=AZURITE_KEY)
    await storage.put("a", b"1")
    mine = storage._loops.get().http_transport()
    other = get_transport(TransportConfig(origin="http://127.0.0.1:9"))  # no connection yet
    await storage.aclose()
    assert mine.closed
    assert not other.closed  # the stand-in's aclose() closed every transport of the loop
    await other.aclose()
    assert (await storage.get("a")).data == b"1"  # rebuilt on next use
    await storage.aclose()


def _scripted(size: int) -> tuple[AzureStorage, Any]:
    """A storage whose transport answers a GET with Azurite's 206 for a range starting at
    the end of a 10-byte blob, and a HEAD with ``size``."""

    def answer(request: Any) -> MockResponse:
        if request.method == "HEAD":
            return MockResponse(200, {"content-length": str(size), "etag": '"e"'})
        return MockResponse(206, {"content-range": "bytes 10-9/10", "etag": '"e"'})

    storage = azure_storage(
        account=AZURITE_ACCOUNT,
        container="ctr",
        prefix="p",
        access_key=AZURITE_KEY,
        config={"use_emulator": "true"},
        settings=StorageSettings(retries=StorageRetriesSettings(max_tries=2, initial_backoff_ms=0)),
    )
    transport = MockTransport(answer)
    storage._loops.get()._http_transport = transport
    return storage, transport


async def test_azurite_range_at_the_end_reads_empty() -> None:
    storage, transport = _scripted(size=10)
    result = await storage.get("k", RangeByteRequest(10, 20))
    assert result.data == b""
    assert transport.requests[0].headers["x-ms-range"] == "bytes=10-19"


async def test_a_refused_range_not_at_the_end_stays_an_integrity_error() -> None:
    storage, _ = _scripted(size=20)  # the blob is longer: the 206 is just wrong
    with pytest.raises(RetriesExhaustedError) as caught:
        await storage.get("k", RangeByteRequest(10, 20))
    assert isinstance(caught.value.__cause__, ResponseIntegrityError)


def test_http_date_is_now_in_rfc_1123() -> None:
    from email.utils import parsedate_to_datetime

    value = _auth.http_date()
    assert value.endswith(" GMT")
    assert abs((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()) < 2
