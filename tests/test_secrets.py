"""No secret in a log record, a repr, an exception message or a traceback (issue 15, item 4).

Every backend and every credential type is exercised against its emulator (moto,
fake-gcs-server behind its proxy, Azurite) with the root logger at DEBUG and a handler that
formats every record in full (message, arguments, traceback), so the SDKs' own loggers
(botocore, aiobotocore, aiohttp, azure-core, gcloud-aio) are captured too. A hostile server
that echoes the request back in its error body checks the exception path.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from icechunk_storage import (
    ConfigurationError,
    S3StaticCredentials,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    azure_storage,
    gcs_storage,
    s3_storage,
)
from icechunk_storage._credentials import GcsBearerCredential
from icechunk_storage._redact import REDACTED, redact, remember_secret
from tests._azurite import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer
from tests._gcs_server import GcsProxy
from tests._s3_server import MOTO_REGION, MotoServer

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue0123456789abcdef"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GCS_BEARER = "ya29.a0AfH6SMBexampleBearerTokenValue0123456789"


class _Capture(logging.Handler):
    """Every record, formatted in full, as a user's DEBUG log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()
        self.names: set[str] = set()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name.split(".")[0])
        self.stream.write(self.format(record) + "\n")
        self.stream.write(repr(record.args) + "\n")

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def root_debug() -> Iterator[_Capture]:
    root = logging.getLogger()
    handler, level = _Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _few_tries() -> StorageSettings:
    return StorageSettings(retries=StorageRetriesSettings(max_tries=2, initial_backoff_ms=1))


async def _exercise(storage: Any) -> list[str]:
    """Reads, writes, a listing, a miss and a conflict; returns every error's traceback and
    the storage's repr/str."""
    texts = [repr(storage), str(storage)]
    version = await storage.put("k", b"value", mode="create")
    assert bytes((await storage.get("k")).data) == b"value"
    await storage.head("k")
    assert [info.key async for info in storage.list()] == ["k"]
    for failing in (storage.get("missing"), storage.put("k", b"x", mode="create")):
        try:
            await failing
        except StorageError as exc:
            texts.append("".join(traceback.format_exception(exc)))
    await storage.put("k", b"v2", mode=version)
    # A copy and a batch delete go through the provider's SDK where it has one (a batch delete
    # through aiobotocore for S3), whose loggers then see signed headers: redacted too.
    await storage.copy("k", "k2")
    await storage.delete_many(["k", "k2"])
    await storage.aclose()
    return texts


def _assert_clean(secrets: list[str], texts: list[str], logs: _Capture, sdk: str) -> None:
    assert sdk in logs.names, f"{sdk} logged nothing: the test would prove nothing"
    everything = "\n".join([*texts, logs.text])
    for secret in secrets:
        assert secret not in everything


# --- S3 on moto ----------------------------------------------------------------------------


def _s3(moto_server: MotoServer, bucket: str, **credentials: Any) -> Any:
    return s3_storage(
        bucket=bucket,
        prefix="p",
        region=MOTO_REGION,
        endpoint_url=moto_server.url,
        allow_http=True,
        force_path_style=True,
        **credentials,
    )


def refreshed_s3() -> S3StaticCredentials:
    """A module-level (picklable) get_credentials with a session token."""
    return S3StaticCredentials(
        "AKIAREFRESHED0001",
        SECRET_KEY + "R",
        SESSION_TOKEN + "R",
        datetime.now(UTC) + timedelta(hours=1),
    )


@pytest.mark.parametrize("kind", ["static", "refreshable", "from_env"])
async def test_s3_secrets_stay_out_of_debug_logs(
    moto_server: MotoServer,
    bucket: str,
    aws_isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    root_debug: _Capture,
    kind: str,
) -> None:
    if kind == "static":
        storage = _s3(
            moto_server,
            bucket,
            access_key_id="AKIASTATIC0001",
            secret_access_key=SECRET_KEY,
            session_token=SESSION_TOKEN,
        )
        secrets = [SECRET_KEY, SESSION_TOKEN]
    elif kind == "refreshable":
        storage = _s3(moto_server, bucket, get_credentials=refreshed_s3)
        secrets = [SECRET_KEY + "R", SESSION_TOKEN + "R"]
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRON0001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY + "E")
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN + "E")
        storage = _s3(moto_server, bucket)
        secrets = [SECRET_KEY + "E", SESSION_TOKEN + "E"]
    texts = await _exercise(storage)
    assert "X-Amz-Security-Token" in root_debug.text  # botocore logged the header, redacted
    _assert_clean(secrets, texts, root_debug, "botocore")


# --- GCS on fake-gcs-server ------------------------------------------------------------------


def _gcs(proxy: GcsProxy, bucket: str, **credentials: Any) -> Any:
    return gcs_storage(
        bucket=bucket,
        prefix="p",
        config={"google_base_url": proxy.url, "allow_http": "true"},
        **credentials,
    )


def refreshed_gcs() -> GcsBearerCredential:
    return GcsBearerCredential(
        GCS_BEARER + "R", expires_after=datetime.now(UTC) + timedelta(hours=1)
    )


def _service_account(proxy: GcsProxy) -> dict[str, str]:
    from tests.test_gcs import _service_account as make

    return make(proxy)


@pytest.mark.parametrize("kind", ["bearer", "refreshable", "service_account_key", "file"])
async def test_gcs_secrets_stay_out_of_debug_logs(
    gcs_proxy: GcsProxy,
    gcs_bucket: str,
    gcp_isolated: Path,
    root_debug: _Capture,
    kind: str,
) -> None:
    if kind == "bearer":
        storage = _gcs(gcs_proxy, gcs_bucket, bearer_token=GCS_BEARER)
        secrets = [GCS_BEARER]
    elif kind == "refreshable":
        storage = _gcs(gcs_proxy, gcs_bucket, get_credentials=refreshed_gcs)
        secrets = [GCS_BEARER + "R"]
    else:
        key = _service_account(gcs_proxy)
        gcs_proxy.require_issued = True
        if kind == "service_account_key":
            storage = _gcs(gcs_proxy, gcs_bucket, service_account_key=json.dumps(key))
        else:
            path = gcp_isolated / "sa.json"
            path.write_text(json.dumps(key))
            storage = _gcs(gcs_proxy, gcs_bucket, service_account_file=str(path))
        body = key["private_key"].splitlines()[1:-1]
        secrets = body  # any line of the private key
    texts = await _exercise(storage)
    if kind in ("service_account_key", "file"):
        secrets += gcs_proxy.issued  # the access tokens the token endpoint handed out
    _assert_clean(secrets, texts, root_debug, "aiohttp")


# --- Azure on Azurite ----------------------------------------------------------------------


def _azure(azurite: AzuriteServer, container: str, **credentials: Any) -> Any:
    return azure_storage(
        account=AZURITE_ACCOUNT,
        container=container,
        prefix="p",
        config={"endpoint": azurite.blob_endpoint, "allow_http": "true"},
        **credentials,
    )


@pytest.mark.parametrize("kind", ["key", "sas", "from_env_connection_string"])
async def test_azure_secrets_stay_out_of_debug_logs(
    azurite: AzuriteServer,
    container: str,
    azure_isolated: None,
    monkeypatch: pytest.MonkeyPatch,
    root_debug: _Capture,
    kind: str,
) -> None:
    from tests.test_azure import _sas, _signature_part

    if kind == "key":
        storage = _azure(azurite, container, access_key=AZURITE_KEY)
        secrets = [AZURITE_KEY]
    elif kind == "sas":
        sas = _sas(container, read_only=False, expiry=datetime.now(UTC) + timedelta(hours=1))
        storage = _azure(azurite, container, sas_token=sas)
        secrets = [_signature_part(sas)]
    else:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        storage = _azure(azurite, container)
        secrets = [AZURITE_KEY]
    texts = await _exercise(storage)
    # A copy goes through azure-core's pipeline (its logger) as well as our transport.
    _assert_clean(secrets, texts, root_debug, "azure")


# --- a server that echoes the request into its error text --------------------------------


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """Answers everything with an error whose message quotes the request line and headers."""

    async def handle(request: web.Request) -> web.Response:
        echoed = f"{request.method} {request.path_qs} " + " ".join(
            f"{name}: {value}" for name, value in request.headers.items()
        )
        status = 403 if request.method != "HEAD" else 500
        body = (
            f"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>{echoed}"
            f"</Message></Error>"
        )
        return web.Response(status=status, body=body.encode(), content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _failures(storage: Any) -> str:
    texts = []
    for failing in (storage.get("k"), storage.put("k", b"x"), storage.head("k")):
        try:
            await failing
        except StorageError as exc:
            texts.append("".join(traceback.format_exception(exc)))
            texts.append(repr(exc))
    await storage.aclose()
    assert len(texts) == 6
    return "\n".join(texts)


async def test_server_echo_of_the_request_is_redacted_from_errors(
    echo_server: str, aws_isolated: Path, root_debug: _Capture
) -> None:
    s3 = s3_storage(
        bucket="b",
        prefix="p",
        region=MOTO_REGION,
        endpoint_url=echo_server,
        allow_http=True,
        force_path_style=True,
        access_key_id="AKIAECHO0001",
        secret_access_key=SECRET_KEY + "X",
        session_token=SESSION_TOKEN + "X",
        settings=_few_tries(),
    )
    gcs = gcs_storage(
        bucket="b",
        prefix="p",
        bearer_token=GCS_BEARER + "X",
        config={"google_base_url": echo_server, "allow_http": "true"},
        settings=_few_tries(),
    )
    sas = (
        "sv=2021-08-06&ss=b&srt=co&sp=rwdlac&se=2099-01-01"
        "&sig=c2VjcmV0U0FTc2lnbmF0dXJlMDEyMzQ1Njc4OQ%3D%3D"
    )
    azure = azure_storage(
        account="acct",
        container="box",
        prefix="p",
        sas_token=sas,
        config={"endpoint": f"{echo_server}/acct", "allow_http": "true"},
        settings=_few_tries(),
    )
    text = await _failures(s3) + await _failures(gcs) + await _failures(azure)
    assert "AccessDenied" in text or "403" in text  # the server's text did arrive
    for secret in (
        SESSION_TOKEN + "X",
        SECRET_KEY + "X",
        GCS_BEARER + "X",
        "c2VjcmV0U0FTc2lnbmF0dXJlMDEyMzQ1Njc4OQ",
    ):
        assert secret not in text
        assert secret not in root_debug.text


# --- the redactor itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("{'Authorization': b'AWS4-HMAC-SHA256 Credential=A/x, Signature=deadbeef01'}", "dead"),
        ("{'X-Amz-Security-Token': 'tok-123456'}", "tok-123456"),
        ("GET /c/k?sv=2021&sig=abc%2Fdef HTTP/1.1", "abc%2Fdef"),
        ("https://h/k?X-Amz-Signature=f00d&X-Amz-Credential=AKIA", "f00d"),
        ("Authorization: Bearer ya29.abc", "ya29.abc"),
        ('{"access_token": "ya29.zzz", "expires_in": 3599}', "ya29.zzz"),
        ("SharedKey devstoreaccount1:c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("x -----BEGIN PRIVATE KEY-----\nMIIEvQIB\n-----END PRIVATE KEY----- y", "MIIEvQIB"),
        ("DefaultEndpointsProtocol=http;AccountKey=a2V5a2V5;", "a2V5a2V5"),
        ("grant_type=jwt&assertion=eyJhbGciOi.payload.sig", "eyJhbGciOi"),
    ],
)
def test_redact_patterns(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_redact_keeps_ordinary_text() -> None:
    text = "ContinuationToken=abc list of 'p/k' SignatureDoesNotMatch Credential=AKIA/x"
    assert redact(text) == text


def test_remembered_values_are_redacted_raw_and_url_encoded() -> None:
    remember_secret("s3cr3t/value+with=chars")
    assert redact("a s3cr3t/value+with=chars b s3cr3t%2Fvalue%2Bwith%3Dchars") == (
        f"a {REDACTED} b {REDACTED}"
    )


def test_storage_error_messages_are_redacted() -> None:
    error = StorageError("server said: Authorization: Bearer abc.def")
    assert "abc.def" not in str(error)
    assert "abc.def" not in repr(error)


def test_repr_and_pickle_of_storages_hold_no_secret_in_text() -> None:
    storages = [
        s3_storage(bucket="b", prefix="p", access_key_id="AKIA", secret_access_key=SECRET_KEY),
        gcs_storage(bucket="b", prefix="p", bearer_token=GCS_BEARER),
        azure_storage(account="acct", container="box", prefix="p", access_key=AZURITE_KEY),
    ]
    for storage in storages:
        for text in (repr(storage), str(storage), repr(pickle.loads(pickle.dumps(storage)))):
            for secret in (SECRET_KEY, GCS_BEARER, AZURITE_KEY):
                assert secret not in text


# --- http:// and TLS -----------------------------------------------------------------------


def test_http_endpoints_are_refused_without_allow_http() -> None:
    with pytest.raises(ConfigurationError, match="allow_http"):
        s3_storage(bucket="b", prefix="p", endpoint_url="http://127.0.0.1:9000", region="r")
    with pytest.raises(ConfigurationError, match="allow_http"):
        gcs_storage(bucket="b", prefix="p", config={"google_base_url": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="allow_http"):
        azure_storage(
            account="acct",
            container="box",
            prefix="p",
            config={"endpoint": "http://127.0.0.1:1/acct"},
        )
