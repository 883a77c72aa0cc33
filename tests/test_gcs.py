"""GCS specifics: factory validation, every auth mode proven at the server, the preconditions
and retries on the wire, secrets kept out of reprs and errors.

Auth tests run a loopback OAuth2 token endpoint and a loopback GCE metadata server (both in
``tests._gcs_server.GcsProxy``); the proxy in front of fake-gcs-server refuses (401) any
request whose bearer is not one those endpoints issued, and the test compares the bearer
that reached the storage server with the one issued. fake-gcs-server itself checks no auth.

Preconditions fake-gcs-server does not enforce (``ifGenerationNotMatch`` on reads,
``ifSourceGenerationMatch`` on rewrites, ``ifGenerationMatch`` on resumable uploads) are
shown *sent* here, from the proxy's recordings; the proxy enforces the last two so the
conformance suite checks their effect too.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from icechunk_storage import (
    AlreadyExistsError,
    ConfigurationError,
    CredentialsRefreshError,
    GcsBearerCredential,
    GcsCredentials,
    GcsStorage,
    PreconditionFailedError,
    StorageConcurrencySettings,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    TransientError,
    VersionInfo,
    gcs_storage,
)
from icechunk_storage._errors import AuthenticationError, RetriesExhaustedError
from tests._gcs_server import GcsProxy

QUICK = StorageSettings(
    retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=1, max_backoff_ms=2)
)

# --- helpers -------------------------------------------------------------------------------


def _rsa_key() -> tuple[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


def _service_account(proxy: GcsProxy) -> dict[str, str]:
    pem, public = _rsa_key()
    proxy.trusted_public_key = public
    return {
        "type": "service_account",
        "project_id": "test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "sa@test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{proxy.url}/token",
    }


def _authorized_user(proxy: GcsProxy) -> dict[str, str]:
    return {
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": "csecret",
        "refresh_token": "rtoken",
        "token_uri": f"{proxy.url}/token",
    }


def _storage(proxy: GcsProxy, bucket: str, **kwargs: Any) -> GcsStorage:
    return gcs_storage(
        bucket=bucket,
        prefix="p",
        config={"google_base_url": proxy.url, "allow_http": "true"},
        **kwargs,
    )


async def _round_trip(storage: GcsStorage) -> None:
    await storage.put("k", b"v")
    assert bytes((await storage.get("k")).data) == b"v"
    await storage.aclose()


def _storage_bearers(proxy: GcsProxy) -> set[str | None]:
    return {r.bearer for r in proxy.recorded()}


_counter_file: Path | None = None


def refreshing_bearer() -> GcsBearerCredential:
    """A module-level (picklable) get_credentials: counts its calls in a file."""
    assert _counter_file is not None
    calls = int(_counter_file.read_text() or "0") + 1 if _counter_file.exists() else 1
    _counter_file.write_text(str(calls))
    return GcsBearerCredential(
        f"user-token-{calls}", expires_after=datetime.now(UTC) + timedelta(hours=1)
    )


# --- factory validation --------------------------------------------------------------------


def test_conflicting_credentials_are_refused_naming_both() -> None:
    with pytest.raises(ConfigurationError, match=r"bearer_token.*anonymous=True"):
        gcs_storage(bucket="b", prefix="p", bearer_token="t", anonymous=True)
    with pytest.raises(ConfigurationError, match="service_account_file, bearer_token"):
        gcs_storage(bucket="b", prefix="p", service_account_file="/f", bearer_token="t")
    with pytest.raises(ConfigurationError, match=r"from_env=True.*get_credentials"):
        gcs_storage(bucket="b", prefix="p", from_env=True, get_credentials=refreshing_bearer)


def test_get_credentials_alone_means_refreshable() -> None:
    storage = gcs_storage(bucket="b", prefix="p", get_credentials=refreshing_bearer)
    assert isinstance(storage.credentials, GcsCredentials.Refreshable)


def test_config_keys_are_checked(gcp_isolated: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"Unknown GCS config key 'region'.*google_base_url"
    ):
        gcs_storage(bucket="b", prefix="p", config={"region": "eu"})
    with pytest.raises(ConfigurationError, match="service_account_file"):
        gcs_storage(bucket="b", prefix="p", config={"google_service_account": "/f"})
    with pytest.raises(ConfigurationError, match="allow_http"):
        gcs_storage(bucket="b", prefix="p", config={"google_base_url": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="without a path"):
        gcs_storage(bucket="b", prefix="p", config={"base_url": "https://h/storage/v1"})
    storage = gcs_storage(bucket="b", prefix="p", config={"google_base_url": "https://gcs.example"})
    assert storage.endpoint.origin == "https://gcs.example"
    assert "gcs.example" in repr(storage)


def test_storage_emulator_host(monkeypatch: pytest.MonkeyPatch, gcp_isolated: Path) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    storage = gcs_storage(bucket="b", prefix="p")
    assert storage.endpoint.origin == "http://127.0.0.1:4443"
    assert isinstance(storage.credentials, GcsCredentials.Anonymous)  # as Google's clients do
    explicit = gcs_storage(bucket="b", prefix="p", bearer_token="t")
    assert isinstance(explicit.credentials, GcsCredentials.Static)
    config_wins = gcs_storage(bucket="b", prefix="p", config={"google_base_url": "https://x"})
    assert config_wins.endpoint.origin == "https://x"


def test_service_account_key_forms() -> None:
    key = {"type": "service_account", "private_key": "SECRET-PEM", "client_email": "a@b"}
    as_dict = gcs_storage(bucket="b", prefix="p", service_account_key=key)
    as_text = gcs_storage(bucket="b", prefix="p", service_account_key=json.dumps(key))
    for storage in (as_dict, as_text):
        assert "SECRET-PEM" not in repr(storage)
        assert "SECRET-PEM" not in repr(storage.credentials)
    with pytest.raises(ConfigurationError, match="not valid JSON") as info:
        gcs_storage(bucket="b", prefix="p", service_account_key="SECRET-not-json")
    assert "SECRET" not in str(info.value)


def test_bad_bucket_and_header_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="bucket"):
        gcs_storage(bucket="b/c", prefix="p")
    with pytest.raises(ConfigurationError, match="Authorization"):
        gcs_storage(bucket="b", prefix="p", headers={"Authorization": "x"})


def test_pickles_by_configuration_without_runtime() -> None:
    storage = gcs_storage(bucket="b", prefix="p", bearer_token="SECRET-TOKEN")
    copy = pickle.loads(pickle.dumps(storage))
    assert copy == storage
    assert "SECRET-TOKEN" not in repr(copy)


# --- auth modes, proven at the server ------------------------------------------------------


async def test_anonymous_sends_no_authorization(gcs_proxy: GcsProxy, gcs_bucket: str) -> None:
    await _round_trip(_storage(gcs_proxy, gcs_bucket, anonymous=True))
    assert gcs_proxy.recorded()
    assert all("authorization" not in r.headers for r in gcs_proxy.recorded())


async def test_static_bearer_token(gcs_proxy: GcsProxy, gcs_bucket: str) -> None:
    gcs_proxy.required_bearer = "static-token"
    await _round_trip(_storage(gcs_proxy, gcs_bucket, bearer_token="static-token"))
    assert _storage_bearers(gcs_proxy) == {"static-token"}
    wrong = _storage(gcs_proxy, gcs_bucket, bearer_token="other-token")
    with pytest.raises(AuthenticationError) as info:
        await wrong.put("k", b"v")
    assert "other-token" not in str(info.value)
    await wrong.aclose()


@pytest.mark.parametrize("form", ["dict", "json"])
async def test_service_account_key(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path, form: str
) -> None:
    key = _service_account(gcs_proxy)
    gcs_proxy.require_issued = True
    argument: Any = key if form == "dict" else json.dumps(key)
    await _round_trip(_storage(gcs_proxy, gcs_bucket, service_account_key=argument))
    jwt_grants = [t for t in gcs_proxy.token_requests if "assertion" in t]
    assert len(jwt_grants) == 1  # one signed JWT, verified against the key's public half
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_one_token_per_identity_per_process(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path
) -> None:
    key = json.dumps(_service_account(gcs_proxy))
    gcs_proxy.require_issued = True
    first = _storage(gcs_proxy, gcs_bucket, service_account_key=key)
    second = pickle.loads(pickle.dumps(_storage(gcs_proxy, gcs_bucket, service_account_key=key)))
    await _round_trip(first)
    await _round_trip(second)
    assert len(gcs_proxy.token_requests) == 1
    assert len(_storage_bearers(gcs_proxy)) == 1


async def test_service_account_file(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path
) -> None:
    path = gcp_isolated / "sa.json"
    path.write_text(json.dumps(_service_account(gcs_proxy)))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket, service_account_file=str(path)))
    assert [t["grant_type"] for t in gcs_proxy.token_requests] == [
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ]
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_application_credentials_authorized_user(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path
) -> None:
    path = gcp_isolated / "adc.json"
    path.write_text(json.dumps(_authorized_user(gcs_proxy)))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket, application_credentials=str(path)))
    (grant,) = gcs_proxy.token_requests
    assert (grant["grant_type"], grant["refresh_token"]) == ("refresh_token", "rtoken")
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_application_credentials_service_account(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path
) -> None:
    path = gcp_isolated / "adc-sa.json"
    path.write_text(json.dumps(_service_account(gcs_proxy)))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket, application_credentials=str(path)))
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_from_env_google_application_credentials(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = gcp_isolated / "env-sa.json"
    path.write_text(json.dumps(_service_account(gcs_proxy)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket))
    assert len(gcs_proxy.token_requests) == 1
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_from_env_adc_well_known_file(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = gcp_isolated / "gcloud"
    config_dir.mkdir()
    user = _authorized_user(gcs_proxy)
    user["refresh_token"] = f"rt-{config_dir}"  # a distinct identity from other tests
    (config_dir / "application_default_credentials.json").write_text(json.dumps(user))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config_dir))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket, from_env=True))
    (grant,) = gcs_proxy.token_requests
    assert grant["refresh_token"] == f"rt-{config_dir}"
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_from_env_metadata_server(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCE_METADATA_HOST", gcs_proxy.url.removeprefix("http://"))
    gcs_proxy.require_issued = True
    await _round_trip(_storage(gcs_proxy, gcs_bucket))
    (fetch,) = gcs_proxy.token_requests
    assert fetch["kind"] == "metadata"
    assert _storage_bearers(gcs_proxy) == {gcs_proxy.issued[-1]}


async def test_refreshable_get_credentials(
    gcs_proxy: GcsProxy, gcs_bucket: str, tmp_path: Path
) -> None:
    global _counter_file
    _counter_file = tmp_path / "calls"
    storage = _storage(gcs_proxy, gcs_bucket, get_credentials=refreshing_bearer)
    gcs_proxy.required_bearer = "user-token-1"
    await _round_trip(storage)
    await _round_trip(pickle.loads(pickle.dumps(storage)))
    assert _counter_file.read_text() == "1"
    assert _storage_bearers(gcs_proxy) == {"user-token-1"}


async def test_token_endpoint_failure_is_clear_and_secret_free(
    gcs_proxy: GcsProxy, gcs_bucket: str, gcp_isolated: Path
) -> None:
    key = _service_account(gcs_proxy)
    _, other_public = _rsa_key()
    gcs_proxy.trusted_public_key = other_public  # the signature will not verify
    storage = _storage(gcs_proxy, gcs_bucket, service_account_key=key)
    with pytest.raises(CredentialsRefreshError) as info:
        await storage.put("k", b"v")
    text = str(info.value) + repr(info.value.__cause__)
    assert "PRIVATE KEY" not in text
    assert "service account key" in text
    assert gcs_proxy.recorded() == []  # nothing was sent unauthenticated
    await storage.aclose()


# --- preconditions and retries on the wire -------------------------------------------------


async def test_conditional_writes_are_multipart_with_generation(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True)
    first = await storage.put("c", b"1", mode="create")
    assert first.generation is not None
    assert first.etag is not None
    second = await storage.put("c", b"2", mode=first)
    posts = [r.query for r in gcs_proxy.recorded("POST")]
    assert posts[0]["uploadType"] == "multipart"
    assert posts[0]["ifGenerationMatch"] == "0"
    assert posts[1]["ifGenerationMatch"] == first.generation
    with pytest.raises(PreconditionFailedError):
        await storage.put("c", b"3", mode=VersionInfo(etag=first.etag))  # no generation
    assert (await storage.head("c")).version == second
    await storage.aclose()


async def test_conditional_read_and_copy_send_their_generation(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    """fake-gcs-server ignores both parameters: here they are shown sent (the read is
    also checked client-side against the answer's generation)."""
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True)
    version = await storage.put("r", b"1")
    assert await storage.get_if_changed("r", version) is None
    await storage.copy("r", "r2", if_version=version)
    gets = [r.query for r in gcs_proxy.recorded("GET") if r.query.get("alt") == "media"]
    assert gets[-1]["ifGenerationNotMatch"] == version.generation
    (rewrite,) = [r for r in gcs_proxy.recorded("POST") if "/rewriteTo/" in r.path]
    assert rewrite.query["ifSourceGenerationMatch"] == version.generation
    await storage.aclose()


async def test_a_session_uri_on_another_origin_is_refused_at_once(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    """Behind this proxy the server names its own address in the session URI: the upload's
    bytes would go around the endpoint we were given. Refused, not retried (it would say the
    same again), and the message names both origins but not the session URI."""
    gcs_proxy.rewrite_locations = False
    settings = StorageSettings(minimum_size_for_multipart_upload=1024)
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True).with_settings(settings)
    with pytest.raises(StorageError) as raised:
        await storage.put("big", b"x" * 4096)
    assert not isinstance(raised.value, TransientError | RetriesExhaustedError)
    message = str(raised.value)
    assert gcs_proxy.upstream in message
    assert gcs_proxy.url in message
    assert "upload_id" not in message
    starts = [r for r in gcs_proxy.recorded("POST") if r.query.get("uploadType")]
    assert len(starts) == 1
    assert gcs_proxy.recorded("PUT") == []
    await storage.aclose()


async def test_large_writes_are_resumable_with_the_precondition(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    """The proxy enforces the resumable ifGenerationMatch (fake-gcs-server does not)."""
    settings = StorageSettings(
        minimum_size_for_multipart_upload=600 * 1024,
        concurrency=StorageConcurrencySettings(ideal_concurrent_request_size=300 * 1024),
    )
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True).with_settings(settings)
    data = bytes(range(256)) * 4 * 700  # 700 KiB: chunks of 256, 256, 188 KiB
    version = await storage.put("big", data, mode="create", metadata={"m": "1"})
    assert bytes((await storage.get("big")).data) == data
    info = await storage.head("big")
    assert info.version == version
    assert info.metadata["m"] == "1"
    start = next(r for r in gcs_proxy.recorded("POST") if r.query.get("uploadType"))
    assert start.query == {"uploadType": "resumable", "ifGenerationMatch": "0"}
    ranges = [r.headers["content-range"] for r in gcs_proxy.recorded("PUT")]
    assert ranges == [
        "bytes 0-262143/*",
        "bytes 262144-524287/*",
        f"bytes 524288-{len(data) - 1}/*",
        f"bytes */{len(data)}",
    ]
    with pytest.raises(AlreadyExistsError):
        await storage.put("big", data, mode="create")
    await storage.aclose()


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_transient_statuses_are_retried(
    gcs_proxy: GcsProxy, gcs_bucket: str, status: int
) -> None:
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True).with_settings(QUICK)
    await storage.put("t", b"x")
    gcs_proxy.inject("status", lambda r: r.method == "GET", times=2, status=status)
    assert bytes((await storage.get("t")).data) == b"x"
    assert [r.status for r in gcs_proxy.recorded("GET")] == [status, status, 200]
    await storage.aclose()


async def test_reset_connections_are_retried_and_exhaust(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True)
    await storage.put("t", b"x")
    gcs_proxy.inject("reset", lambda r: r.method == "GET", times=1)
    assert bytes((await storage.get("t")).data) == b"x"
    gcs_proxy.inject("status", lambda r: r.method == "DELETE", times=100, status=503)
    quick = storage.with_settings(QUICK)
    with pytest.raises(RetriesExhaustedError):
        await quick.delete("t")
    await quick.aclose()
    await storage.aclose()


async def test_lost_response_of_a_conditional_write_is_recovered(
    gcs_proxy: GcsProxy, gcs_bucket: str
) -> None:
    storage = _storage(gcs_proxy, gcs_bucket, anonymous=True)
    gcs_proxy.inject("drop_response", lambda r: r.method == "POST", times=1)
    version = await storage.put("lost", b"mine", mode="create")  # retried, trips its own 412
    assert (await storage.head("lost")).version == version
    statuses = [r.status for r in gcs_proxy.recorded("POST")]
    assert statuses == [200, 412]
    await storage.aclose()
