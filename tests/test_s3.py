"""S3-specific tests: configuration, signing, and the requests actually sent.

Most I/O tests talk to moto through the recording proxy (``tests/_s3_proxy.py``), which
shows what went over the wire and injects faults. The signer is compared byte for byte with
botocore's and checked by a moto server that verifies signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icechunk_storage import (
    AlreadyExistsError,
    AuthenticationError,
    ChecksumAlgorithm,
    ConfigurationError,
    ConnectionLostError,
    CredentialsRefreshError,
    NotSupportedByServerError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeByteRequest,
    RangeNotSatisfiableError,
    ReadOnlyStorageError,
    Repository,
    ResponseIntegrityError,
    RetriesExhaustedError,
    S3Credentials,
    S3Options,
    S3StaticCredentials,
    S3Storage,
    ServerError,
    StorageConcurrencySettings,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    StorageTimeoutError,
    StorageTimeoutSettings,
    ThrottledError,
    VersionInfo,
    get_max_concurrent_requests,
    r2_storage,
    refresh_stats,
    s3_storage,
    tigris_storage,
)
from icechunk_storage._backend import WRITE_ID_METADATA_KEY
from icechunk_storage._s3._client import _add_headers, _normalise_unsigned
from icechunk_storage._s3._copy import MAX_COPY_RESULT_BYTES, copy_result_etag
from icechunk_storage._s3._errors import (
    MultipartUploadVanishedError,
    S3ErrorContext,
    error_for_status,
)
from icechunk_storage._s3._headers import merge_headers
from icechunk_storage._s3._location import resolve_location
from icechunk_storage._s3._sigv4 import SigV4Signer, canonical_query
from icechunk_storage._s3._storage import build_get_request
from tests._s3_proxy import RecordedRequest, RecordingProxy
from tests._s3_server import MOTO_KEY, MOTO_REGION, MotoServer

pytestmark = pytest.mark.s3

SECRET = "very-secret-key-material"
FAST = StorageSettings(
    retries=StorageRetriesSettings(max_tries=4, initial_backoff_ms=1, max_backoff_ms=5)
)


def make(endpoint: str, bucket: str, **kwargs: Any) -> S3Storage:
    """An s3_storage on a local endpoint, path-style, static keys, fast retries."""
    arguments: dict[str, Any] = {
        "bucket": bucket,
        "prefix": "p",
        "endpoint_url": endpoint,
        "allow_http": True,
        "force_path_style": True,
        "region": MOTO_REGION,
        "access_key_id": MOTO_KEY,
        "secret_access_key": MOTO_KEY,
        "settings": FAST,
    }
    arguments.update(kwargs)
    return s3_storage(**arguments)


def only(requests: list[RecordedRequest], method: str, query: str | None = None) -> list[Any]:
    return [
        r for r in requests if r.method == method and (query is None or query in r.query_params)
    ]


# --- import and construction (no I/O) ----------------------------------------------------


def test_importing_the_package_loads_no_sdk() -> None:
    script = (
        "import sys, icechunk_storage as ic\n"
        "s = ic.s3_storage(bucket='b-1', prefix='p', region='us-east-1',"
        " access_key_id='a', secret_access_key='b')\n"
        "ic.tigris_storage(bucket='b-1', prefix='p', region='iad')\n"
        "ic.r2_storage(prefix='b-1/p', account_id='acct')\n"
        "repr(s); s == s; import pickle; pickle.loads(pickle.dumps(s))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('aiobotocore', 'botocore', 'aiohttp', 'yarl', 'boto3')]\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_plain_http_needs_allow_http() -> None:
    with pytest.raises(ConfigurationError, match=r"allow_http=True"):
        s3_storage(bucket="bkt", prefix="p", endpoint_url="http://127.0.0.1:9000", region="r")
    with pytest.raises(ValueError, match=r"allow_http=True"):
        r2_storage(bucket="bkt", endpoint_url="http://127.0.0.1:9000")
    storage = s3_storage(
        bucket="bkt", prefix="p", endpoint_url="http://127.0.0.1:9000", allow_http=True
    )
    assert storage.options.endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "endpoint",
    ["https://t3.storage.dev", "https://fly.storage.tigris.dev", "https://x.t3.storage.dev/"],
)
def test_s3_storage_refuses_tigris_endpoints(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="tigris_storage"):
        s3_storage(bucket="bkt", prefix="p", endpoint_url=endpoint)


@pytest.mark.parametrize(
    "endpoint", ["ftp://host", "127.0.0.1:9000", "https://", "https://h/?x=1", "https://u:p@h"]
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="endpoint_url"):
        s3_storage(bucket="bkt", prefix="p", endpoint_url=endpoint, allow_http=True)


@pytest.mark.parametrize("argument", ["headers", "read_headers", "write_headers"])
@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"bad name": "v"}, "invalid HTTP header name"),
        ({"x-colon:": "v"}, "invalid HTTP header name"),
        ({"": "v"}, "invalid HTTP header name"),
        ({"x-ok": "line\r\nbreak"}, "invalid HTTP header value"),
        ({"x-ok": "nul\x00"}, "invalid HTTP header value"),
        ({"x-ok": 3}, "invalid HTTP header value"),
        ({"Authorization": "x"}, "managed by the storage"),
        ({"x-amz-date": "x"}, "managed by the storage"),
        ({"If-Match": "x"}, "managed by the storage"),
    ],
)
def test_invalid_headers_are_refused_at_construction(
    argument: str, headers: dict[str, Any], match: str
) -> None:
    arguments: dict[str, Any] = {argument: headers}
    with pytest.raises(ValueError, match=match):
        s3_storage(bucket="bkt", prefix="p", **arguments)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"from_env": False}, "from_env=False"),
        ({"access_key_id": "a", "secret_access_key": "b", "anonymous": True}, "Conflicting"),
        ({"access_key_id": "a", "secret_access_key": "b", "from_env": True}, "Conflicting"),
        ({"access_key_id": "a"}, "secret_access_key"),
        ({"session_token": "t"}, "secret_access_key"),
        ({"anonymous": True, "from_env": True}, "Conflicting"),
    ],
)
def test_credential_arguments_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        s3_storage(bucket="bkt", prefix="p", **kwargs)


def _static_callback() -> S3StaticCredentials:
    return S3StaticCredentials("from-callback", SECRET)


def test_credential_modes() -> None:
    def credentials(**kwargs: Any) -> object:
        return s3_storage(bucket="bkt", prefix="p", **kwargs).credentials

    assert credentials() == S3Credentials.FromEnv()
    assert credentials(from_env=True) == S3Credentials.FromEnv()
    assert credentials(anonymous=True) == S3Credentials.Anonymous()
    static = credentials(access_key_id="a", secret_access_key=SECRET, session_token="t")
    assert isinstance(static, S3Credentials.Static)
    assert static.credentials.session_token == "t"
    assert isinstance(credentials(get_credentials=_static_callback), S3Credentials.Refreshable)
    scattered = credentials(get_credentials=_static_callback, scatter_initial_credentials=True)
    assert isinstance(scattered, S3Credentials.Refreshable)
    assert scattered.current == _static_callback()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bucket": ""}, "bucket"),
        ({"bucket": "a/b"}, "bucket"),
        ({"network_stream_timeout_seconds": -1}, "network_stream_timeout_seconds"),
        ({"checksum_algorithm": "md5"}, "checksum_algorithm"),
        ({"requester_pays": "yes"}, "requester_pays"),
        ({"region": ""}, "region"),
        ({"prefix": "a/../b"}, "segment"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"bucket": "bkt", "prefix": "p", **kwargs}
    with pytest.raises(ValueError, match=match):
        s3_storage(**arguments)


def test_checksum_algorithm_names() -> None:
    for name, member in [
        ("crc32", ChecksumAlgorithm.Crc32),
        ("CRC64NVME", ChecksumAlgorithm.Crc64Nvme),
    ]:
        options = S3Options(checksum_algorithm=name)
        assert options.checksum_algorithm is member
    assert ChecksumAlgorithm.Crc32c.wire_name == "CRC32C"


def test_construction_does_no_io_and_repr_hides_secrets() -> None:
    storage = s3_storage(
        bucket="bkt",
        prefix="some/prefix/",
        endpoint_url="http://127.0.0.1:1",  # nothing listens there
        allow_http=True,
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,
        session_token="session-token-secret",
    )
    text = repr(storage) + str(storage)
    assert "S3Storage" in text
    assert "s3://bkt/some/prefix" in text
    assert "http://127.0.0.1:1" in text
    assert SECRET not in text
    assert "session-token-secret" not in text
    assert storage.prefix == "some/prefix"


def test_equality_hash_and_pickle_by_configuration() -> None:
    def build(**kwargs: Any) -> S3Storage:
        arguments: dict[str, Any] = {
            "bucket": "bkt",
            "prefix": "p",
            "access_key_id": "a",
            "secret_access_key": "b",
        }
        arguments.update(kwargs)
        return s3_storage(**arguments)

    first, second = build(), build()
    assert first == second
    assert hash(first) == hash(second)
    assert pickle.loads(pickle.dumps(first)) == first
    assert build(prefix="q") != first
    assert build(bucket="other") != first
    assert build(secret_access_key="c") != first
    assert build(headers={"x-a": "1"}) != first
    assert build(requester_pays=True) != first
    assert first.with_settings(FAST) != first
    assert first.with_settings(FAST) == second.with_settings(FAST)


def test_tigris_configuration() -> None:
    with pytest.raises(ConfigurationError, match="use_weak_consistency=True"):
        tigris_storage(bucket="bkt", prefix="p")
    storage = tigris_storage(
        bucket="bkt", prefix="p", region="iad", access_key_id="a", secret_access_key="b"
    )
    assert storage.options.endpoint_url == "https://t3.storage.dev"
    assert storage.options.region == "iad"
    assert "tigris://bkt/p" in repr(storage)
    assert storage.capabilities.can_write
    assert dict(storage.request_headers.read) == {
        "X-Tigris-Regions": "iad",
        "X-Tigris-Consistent": "true",
        "Cache-Control": "no-cache",
    }
    assert dict(storage.request_headers.write) == {
        "X-Tigris-Regions": "iad",
        "X-Tigris-Consistent": "true",
    }
    weak = tigris_storage(bucket="bkt", prefix="p", use_weak_consistency=True)
    assert not weak.capabilities.can_write
    assert weak.request_headers.read == ()
    assert weak.options.region == "auto"


async def test_weakly_consistent_tigris_refuses_writes_without_io() -> None:
    weak = tigris_storage(
        bucket="bkt",
        prefix="p",
        use_weak_consistency=True,
        endpoint_url="http://127.0.0.1:1",
        allow_http=True,
    )
    with pytest.raises(ReadOnlyStorageError):
        await weak.put("k", b"x")
    with pytest.raises(ReadOnlyStorageError):
        await weak.delete_many(["k"])
    await weak.aclose()


def test_r2_configuration() -> None:
    storage = r2_storage(bucket="bkt", prefix="p", account_id="acct123")
    assert storage.options.endpoint_url == "https://acct123.r2.cloudflarestorage.com"
    assert storage.options.region == "auto"
    assert storage.options.force_path_style
    from_prefix = r2_storage(prefix="/bucket-name/a/b/", account_id="acct123")
    assert (from_prefix.bucket, from_prefix.prefix) == ("bucket-name", "a/b")
    only_bucket = r2_storage(prefix="bucket-name", endpoint_url="https://pub.example.com")
    assert (only_bucket.bucket, only_bucket.prefix) == ("bucket-name", "")
    with pytest.raises(ConfigurationError, match="either bucket or prefix"):
        r2_storage(account_id="acct123")
    with pytest.raises(ConfigurationError, match="account_id"):
        r2_storage(bucket="bkt")
    with pytest.raises(ConfigurationError, match="account_id"):
        r2_storage(bucket="bkt", account_id="no/slash")


@pytest.mark.parametrize(
    ("bucket", "endpoint", "region", "force", "url"),
    [
        ("bkt", None, "us-west-2", False, "https://bkt.s3.us-west-2.amazonaws.com/k%20ey"),
        ("bkt", None, "cn-north-1", False, "https://bkt.s3.cn-north-1.amazonaws.com.cn/k%20ey"),
        (
            "my.dotted",
            None,
            "eu-west-1",
            False,
            "https://s3.eu-west-1.amazonaws.com/my.dotted/k%20ey",
        ),
        ("bkt", None, "us-east-1", True, "https://s3.us-east-1.amazonaws.com/bkt/k%20ey"),
        ("bkt", "http://127.0.0.1:9000", "r", False, "http://127.0.0.1:9000/bkt/k%20ey"),
        ("bkt", "http://localhost:9000/", "r", False, "http://localhost:9000/bkt/k%20ey"),
        ("bkt", "https://minio.example:443", "r", False, "https://bkt.minio.example/k%20ey"),
        ("bkt", "https://h.example/base/", "r", True, "https://h.example/base/bkt/k%20ey"),
        ("UPPER", "https://h.example", "r", False, "https://h.example/UPPER/k%20ey"),
        ("bkt", "http://[::1]:9000", "r", False, "http://[::1]:9000/bkt/k%20ey"),
    ],
)
def test_addressing(bucket: str, endpoint: str | None, region: str, force: bool, url: str) -> None:
    assert resolve_location(bucket, endpoint, region, force).url("k ey") == url


def test_header_merge_rules() -> None:
    assert merge_headers([("X-A", "1"), ("x-b", "2")], [("x-a", "3")]) == (
        ("x-a", "3"),
        ("x-b", "2"),
    )
    storage = s3_storage(
        bucket="bkt",
        prefix="p",
        headers={"X-Common": "c", "X-Both": "common"},
        read_headers={"x-both": "read", "X-Read": "r"},
        write_headers={"X-BOTH": "write", "x-amz-meta-w": "w"},
        requester_pays=True,
    )
    headers = storage.request_headers
    assert dict(headers.for_method("GET")) == {
        "X-Common": "c",
        "x-both": "read",
        "X-Read": "r",
        "x-amz-request-payer": "requester",
    }
    assert headers.for_method("HEAD") == headers.read
    for method in ("PUT", "POST", "DELETE"):
        assert dict(headers.for_method(method)) == {
            "X-Common": "c",
            "X-BOTH": "write",
            "x-amz-meta-w": "w",
            "x-amz-request-payer": "requester",
        }
    tigris = tigris_storage(
        bucket="bkt",
        prefix="p",
        region="iad",
        headers={"x-tigris-regions": "mine", "cache-control": "max-age=9"},
    )
    assert dict(tigris.request_headers.read) == {
        "X-Tigris-Regions": "iad",
        "Cache-Control": "no-cache",
        "X-Tigris-Consistent": "true",
    }
    assert dict(tigris.request_headers.write) == {
        "X-Tigris-Regions": "iad",
        "cache-control": "max-age=9",
        "X-Tigris-Consistent": "true",
    }


ERROR_CASES: list[tuple[int, str | None, dict[str, Any], type[BaseException]]] = [
    (412, "PreconditionFailed", {"mode": "create"}, AlreadyExistsError),
    (409, "ConditionalRequestConflict", {"mode": "create"}, AlreadyExistsError),
    (412, None, {"mode": VersionInfo(etag='"e"')}, PreconditionFailedError),
    (409, "ConcurrentModification", {"mode": VersionInfo(etag='"e"')}, PreconditionFailedError),
    (404, "NoSuchKey", {"mode": VersionInfo(etag='"e"')}, PreconditionFailedError),
    (412, "PreconditionFailed", {"expected": VersionInfo(etag='"e"')}, PreconditionFailedError),
    (404, "NoSuchKey", {}, ObjectNotFoundError),
    (404, "404", {}, ObjectNotFoundError),
    (404, "NoSuchUpload", {}, MultipartUploadVanishedError),
    (404, "NoSuchBucket", {}, ConfigurationError),
    (416, "InvalidRange", {}, RangeNotSatisfiableError),
    (403, "SignatureDoesNotMatch", {}, AuthenticationError),
    (400, "ExpiredToken", {}, AuthenticationError),
    (403, "InvalidAccessKeyId", {}, AuthenticationError),
    (403, "AccessDenied", {}, PermissionDeniedError),
    (301, "PermanentRedirect", {}, ConfigurationError),
    (503, "SlowDown", {}, ThrottledError),
    (429, None, {}, ThrottledError),
    (400, "RequestTimeout", {}, StorageTimeoutError),
    (408, None, {}, StorageTimeoutError),
    (499, None, {}, ServerError),
    (500, "InternalError", {}, ServerError),
    (502, None, {}, ServerError),
    (503, "ServiceUnavailable", {}, ServerError),
    (504, None, {}, ServerError),
    (501, "NotImplemented", {}, NotSupportedByServerError),
    (400, "InvalidArgument", {}, StorageError),
    (409, "BucketNotEmpty", {}, StorageError),
]


@pytest.mark.parametrize(("status", "code", "context", "expected"), ERROR_CASES)
def test_error_mapping(
    status: int, code: str | None, context: dict[str, Any], expected: type[BaseException]
) -> None:
    error = error_for_status(
        status, code, "server says", S3ErrorContext("op", "k", "bkt", **context)
    )
    assert type(error) is expected
    if expected is StorageError:
        assert not isinstance(error, (ConfigurationError, ServerError))  # not retried
    complete = S3ErrorContext("complete_multipart", "k", "bkt", mode="create")
    assert isinstance(error_for_status(404, None, None, complete), MultipartUploadVanishedError)


_RESULT_NS = b'<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'


@pytest.mark.parametrize(
    ("body", "etag"),
    [
        (b'<?xml version="1.0" encoding="UTF-8"?>\n' + _RESULT_NS + b"<LastModified>2024-01-01"
         b"T00:00:00Z</LastModified><ETag>&quot;9b2c&quot;</ETag></CopyObjectResult>", '"9b2c"'),
        (b"\n  \n" + b'<?xml version="1.0"?>' + b" " * 300 + _RESULT_NS
         + b'<ETag>"9b2c-2"</ETag></CopyObjectResult>', '"9b2c-2"'),  # keep-alive whitespace
        (b'<CopyObjectResult><ETag> "x" </ETag></CopyObjectResult>', '"x"'),  # no namespace
    ],
)  # fmt: skip
def test_copy_results_are_parsed(body: bytes, etag: str) -> None:
    assert copy_result_etag(body, S3ErrorContext("copy", "k", "bkt")) == etag


@pytest.mark.parametrize(
    ("body", "context", "expected", "match"),
    [
        (b"<Error><Code>InternalError</Code><Message>retry</Message></Error>", {},
         ServerError, "InternalError: retry .sent in a 200 response"),
        (b"<Error><Code>SlowDown</Code></Error>", {}, ThrottledError, "SlowDown"),
        (b"<?xml version='1.0'?><Error><Code>PreconditionFailed</Code></Error>",
         {"expected": VersionInfo(etag='"e"')}, PreconditionFailedError, "200 response"),
        (b"<Error><Code>NoSuchKey</Code></Error>", {}, ObjectNotFoundError, "'k'"),
        (b"<Error></Error>", {}, ServerError, "sent in a 200 response"),
        (b"", {}, ResponseIntegrityError, "empty body"),
        (b"  \r\n ", {}, ResponseIntegrityError, "empty body"),
        (b"<html><body>502 from a proxy</body></html>", {}, ResponseIntegrityError, "'html'"),
        (b"<CopyObjectResult><ETag>&quot;a", {}, ResponseIntegrityError, "well-formed"),
        (b"<CopyObjectResult></CopyObjectResult>", {}, ResponseIntegrityError, "no usable ETag"),
        (b"<CopyObjectResult><ETag>&quot;a&#13;&#10;x: y&quot;</ETag></CopyObjectResult>", {},
         ResponseIntegrityError, "no usable ETag"),  # would inject a header if sent back
        (b'<!DOCTYPE r [<!ENTITY e "x">]><CopyObjectResult><ETag>&e;</ETag></CopyObjectResult>',
         {}, ResponseIntegrityError, "document type"),
        (b"<ListBucketResult/>", {}, ResponseIntegrityError, "'ListBucketResult'"),
    ],
)  # fmt: skip
def test_copy_results_that_are_errors_or_neither(
    body: bytes, context: dict[str, Any], expected: type[BaseException], match: str
) -> None:
    """An Error body is the error it names, as a 500 (as botocore maps it); any other body
    than a CopyObjectResult with an ETag is an integrity error (retried)."""
    with pytest.raises(expected, match=match) as raised:
        copy_result_etag(body, S3ErrorContext("copy", "k", "bkt", **context))
    assert type(raised.value) is expected


# --- the lean GET signer against botocore's own -------------------------------------------

FIXED_TIME = datetime(2026, 3, 4, 5, 6, 7)
FIXED_STAMP = "20260304T050607Z"

KEY_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")
KEY_SEGMENT = st.text(KEY_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
KEYS = st.lists(KEY_SEGMENT, min_size=1, max_size=4).map("/".join)
TRICKY_KEYS = [
    "plain",
    "chunks/c/0/1",
    "space and+plus",
    "per%cent/q?uery#frag",
    "unicodé/ключ/鍵/🧊",
    "a~b!c'd(e)f*g;h:i@j&k=l$m,n",
    "trailing space ",
]
HEADER_VALUE = st.text(st.sampled_from(" \tabcXYZ019-_./:;,=\"'"), max_size=16)


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


SIGNER_CONFIGS = [
    # (endpoint, region, force_path_style, bucket, session_token, requester_pays, headers)
    ("http://127.0.0.1:9000", "us-east-1", True, "bkt", None, False, {}),
    ("https://minio.example", "eu-west-3", False, "bkt-1", "tok/en+=", True, {"x-custom": "v"}),
    (None, "us-west-2", False, "my-bucket", "FwoGZXIvYXdzE", False, {"X-Mixed-Case": "a  b"}),
    (None, "ap-south-1", True, "my.dotted.bucket", None, True, {}),
    ("https://acct.r2.cloudflarestorage.com", "auto", True, "r2b", None, False, {}),
    ("http://localhost:4566/base/path", "us-east-1", True, "bkt", "t", False, {"x-a": "1"}),
]


@pytest.mark.parametrize("config", SIGNER_CONFIGS)
def test_lean_get_matches_botocore_byte_for_byte(
    config: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """URL, Authorization, date and payload headers equal botocore's GetObject, for many keys,
    ranges, conditional reads, session tokens, addressing styles and custom headers."""
    import botocore.auth
    import botocore.session
    from botocore.config import Config

    endpoint, region, force, bucket, token, requester_pays, headers = config
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FIXED_TIME)
    storage = s3_storage(
        bucket=bucket,
        prefix=None,
        endpoint_url=endpoint,
        allow_http=True,
        region=region,
        force_path_style=force,
        access_key_id="AKIDEXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=token,
        requester_pays=requester_pays,
        read_headers=headers,
    )
    location = resolve_location(bucket, endpoint, region, force)
    signer = SigV4Signer(region)
    client: Any = botocore.session.Session().create_client(
        "s3",
        region_name=region,
        endpoint_url=location.endpoint_url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        config=Config(
            s3={"addressing_style": "path" if location.path_style else "virtual"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            proxies={},
        ),
    )
    client.meta.events.register(
        "before-sign.s3", lambda request, **_: _add_headers(storage.request_headers, request)
    )
    client.meta.events.register("before-send.s3", _capture)
    credentials = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)

    def check(key: str, byte_range: str | None, etag: str | None) -> None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if byte_range is not None:
            params["Range"] = byte_range
        if etag is not None:
            params["IfNoneMatch"] = etag
        with pytest.raises(_Captured) as captured:
            client.get_object(**params)
        sent = captured.value.request
        url, ours = build_get_request(
            location,
            signer,
            storage._read_headers,
            key,
            range_value=byte_range,
            if_none_match=etag,
            credentials=credentials,
            timestamp=FIXED_STAMP,
        )
        assert url == sent.url
        theirs = {
            name.lower(): value.decode() if isinstance(value, bytes) else value
            for name, value in sent.headers.items()
        }
        assert ours["authorization"] == theirs["authorization"]
        for name in ("x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "range"):
            assert ours.get(name) == theirs.get(name)
        for name, value in storage.request_headers.read:
            assert ours[name.lower()] == theirs[name.lower()] == value

    for key in TRICKY_KEYS:
        check(key, None, None)
        check(key, "bytes=0-99", '"abc"')

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        key=KEYS,
        byte_range=st.one_of(
            st.none(),
            st.builds(
                lambda a, n: f"bytes={a}-{a + n}", st.integers(0, 2**40), st.integers(0, 2**30)
            ),
            st.builds(lambda a: f"bytes={a}-", st.integers(0, 2**40)),
            st.builds(lambda n: f"bytes=-{n}", st.integers(1, 2**30)),
        ),
        etag=st.one_of(
            st.none(), st.text("0123456789abcdef", min_size=32, max_size=32).map(lambda e: f'"{e}"')
        ),
    )
    def check_many(key: str, byte_range: str | None, etag: str | None) -> None:
        check(key, byte_range, etag)

    check_many()
    client.close()


_EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
    b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
    b"</ListBucketResult>"
)


_COPY_RESULT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult '
    b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2024-01-01T00:00:00.000Z'
    b"</LastModified><ETag>&quot;0123&quot;</ETag></CopyObjectResult>"
)


def _answer(request: Any) -> Any:
    from icechunk_storage._transport._mock import MockResponse

    if request.method == "GET":
        return MockResponse(200, {"content-type": "application/xml"}, _EMPTY_LISTING)
    if request.method == "DELETE":
        return MockResponse(204)
    if "x-amz-copy-source" in request.headers:
        return MockResponse(200, {"content-type": "application/xml"}, _COPY_RESULT)
    return MockResponse(200, {"etag": '"0123"', "content-length": "0"})


@pytest.mark.parametrize("config", SIGNER_CONFIGS)
@pytest.mark.parametrize("checksum", [None, "crc32", "sha256"])
def test_lean_writes_heads_lists_and_deletes_match_botocore_byte_for_byte(
    config: tuple[Any, ...], checksum: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PutObject (plain, create, If-Match, content type, metadata with the write id, storage
    class, checksums), HeadObject, ListObjectsV2 (delimiter, continuation token),
    DeleteObject and CopyObject (plain and conditional, the source key encoded as botocore
    encodes a CopySource): URL, signed headers, signature and payload hash equal botocore's."""
    import botocore.auth
    import botocore.session
    from botocore.config import Config

    from icechunk_storage._s3._client import LoopClients
    from icechunk_storage._transport._mock import MockTransport

    endpoint, region, force, bucket, token, requester_pays, headers = config
    if checksum is not None and not (endpoint or "").startswith("http:"):
        pytest.skip("a checksummed PUT over https is botocore's aws-chunked trailer: aiobotocore")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FIXED_TIME)
    monkeypatch.setattr(SigV4Signer, "timestamp", lambda self: FIXED_STAMP)
    transport = MockTransport(_answer)
    monkeypatch.setattr(LoopClients, "http_transport", lambda self: transport)
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    storage = s3_storage(
        bucket=bucket,
        prefix=None,
        endpoint_url=endpoint,
        allow_http=True,
        region=region,
        force_path_style=force,
        access_key_id="AKIDEXAMPLE",
        secret_access_key=secret,
        session_token=token,
        requester_pays=requester_pays,
        headers=headers,
        checksum_algorithm=checksum,
        settings=StorageSettings(chunks_storage_class="ONEZONE_IA"),
    )
    location = resolve_location(bucket, endpoint, region, force)
    client: Any = botocore.session.Session().create_client(
        "s3",
        region_name=region,
        endpoint_url=location.endpoint_url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(
            s3={"addressing_style": "path" if location.path_style else "virtual"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            proxies={},
        ),
    )
    client.meta.events.register(
        "before-sign.s3", lambda request, **_: _add_headers(storage.request_headers, request)
    )
    client.meta.events.register("before-send.s3", _normalise_unsigned)  # as ours is set up
    client.meta.events.register("before-send.s3", _capture)
    extra = {"ChecksumAlgorithm": checksum.upper()} if checksum else {}
    payer = {"RequestPayer": "requester"} if requester_pays else {}
    write_extra = {**extra, **payer}

    async def ours(key: str) -> None:
        await storage.put(key, b"body", content_type="application/x", metadata={"ic_kind": "a"})
        await storage.put(f"chunks/{key}", b"", mode="create")
        await storage.put(key, b"again", mode=VersionInfo(etag='"abc"'))
        await storage.head(key)
        await storage._list_page(f"{key}/", None, None)
        await storage._list_page("", "/", "tok+en/=x")
        await storage.delete(key)
        copied = await storage.copy(key, f"chunks/{key}", if_version=VersionInfo(etag='"abc"'))
        assert copied == VersionInfo(etag='"0123"')
        await storage.copy(f"chunks/{key}", key)

    def write_id(index: int) -> str:
        sent = transport.requests[index].headers
        return sent["x-amz-meta-" + WRITE_ID_METADATA_KEY]

    def theirs(key: str) -> list[tuple[str, dict[str, Any]]]:
        klass = {"StorageClass": "ONEZONE_IA"} if key.startswith("chunks/") else {}
        return [
            (
                "put_object",
                {
                    "Key": key,
                    "Body": b"body",
                    "ContentType": "application/x",
                    "Metadata": {"ic_kind": "a"},
                    **klass,
                    **write_extra,
                },
            ),
            (
                "put_object",
                {
                    "Key": f"chunks/{key}",
                    "Body": b"",
                    "IfNoneMatch": "*",
                    "StorageClass": "ONEZONE_IA",
                    "Metadata": {WRITE_ID_METADATA_KEY: write_id(1)},
                    **write_extra,
                },
            ),
            (
                "put_object",
                {
                    "Key": key,
                    "Body": b"again",
                    "IfMatch": "abc",
                    "Metadata": {WRITE_ID_METADATA_KEY: write_id(2)},
                    **klass,
                    **write_extra,
                },
            ),
            ("head_object", {"Key": key}),
            ("list_objects_v2", {"Prefix": f"{key}/", "MaxKeys": 1000}),
            (
                "list_objects_v2",
                {"Prefix": "", "MaxKeys": 1000, "ContinuationToken": "tok+en/=x", "Delimiter": "/"},
            ),
            ("delete_object", {"Key": key}),
            (
                "copy_object",
                {
                    "Key": f"chunks/{key}",
                    "CopySource": {"Bucket": bucket, "Key": key},
                    "CopySourceIfMatch": "abc",
                    "StorageClass": "ONEZONE_IA",
                    **payer,
                },
            ),
            (
                "copy_object",
                {
                    "Key": key,
                    "CopySource": {"Bucket": bucket, "Key": f"chunks/{key}"},
                    **klass,
                    **payer,
                },
            ),
        ]

    for key in TRICKY_KEYS:
        transport.requests.clear()
        asyncio.run(ours(key))
        calls = theirs(key)
        assert len(transport.requests) == len(calls)
        for request, (operation, params) in zip(transport.requests, calls, strict=True):
            with pytest.raises(_Captured) as captured:
                getattr(client, operation)(Bucket=bucket, **params)
            sent = captured.value.request
            assert location.origin + request.target == sent.url, operation
            expected = {
                name.lower(): value.decode() if isinstance(value, bytes) else value
                for name, value in sent.headers.items()
            }
            ours_headers = request.headers
            assert ours_headers["authorization"] == expected["authorization"], operation
            signed = expected["authorization"].split("SignedHeaders=")[1].split(",")[0]
            expected.setdefault("host", location.host)  # added by the HTTP client
            for name in signed.split(";"):
                assert ours_headers[name] == expected[name], (operation, name)
            for name in ("expect", "content-length", "x-amz-sdk-checksum-algorithm"):
                if name == "content-length" and request.body is not None:
                    assert str(len(request.body)) == expected.get(name, "0"), operation
                else:
                    assert ours_headers.get(name) == expected.get(name), (operation, name)
            body = sent.body.read() if hasattr(sent.body, "read") else (sent.body or b"")
            assert bytes(request.body or b"") == bytes(body), operation
    client.close()


@given(
    value=HEADER_VALUE,
    query=st.lists(
        st.tuples(st.text(KEY_CHARS, max_size=6), st.text(KEY_CHARS, max_size=6)), max_size=4
    ),
)
@settings(max_examples=60, deadline=None)
def test_signer_canonicalization_matches_botocore(value: str, query: list[tuple[str, str]]) -> None:
    """Header trimming, query canonicalization and UNSIGNED-PAYLOAD, against S3SigV4Auth."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    for payload_signing in (True, False):
        request = AWSRequest(
            method="GET",
            url="https://bkt.s3.us-east-1.amazonaws.com/a%20b/c",
            headers={"X-Amz-Meta-Odd": value, "Range": "bytes=1-2", "User-Agent": "ua"},
            params=query,  # type: ignore[arg-type]
        )
        request.context["timestamp"] = FIXED_STAMP
        request.context["client_config"] = Config(s3={"payload_signing_enabled": payload_signing})
        auth: Any = S3SigV4Auth(Credentials("AK", "SK", "TOKEN"), "s3", "us-east-1")
        auth._modify_request_before_signing(request)
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        ours = SigV4Signer("us-east-1").sign(
            method="GET",
            host="bkt.s3.us-east-1.amazonaws.com",
            canonical_uri="/a%20b/c",
            query=canonical_query(query),
            headers={"x-amz-meta-odd": value, "range": "bytes=1-2", "user-agent": "ua"},
            access_key="AK",
            secret_key="SK",
            session_token="TOKEN",
            payload_hash=request.headers["X-Amz-Content-SHA256"],
            timestamp=FIXED_STAMP,
        )
        assert ours["authorization"].rsplit("Signature=", 1)[1] == signature
        assert "user-agent" not in ours["authorization"]


@pytest.fixture(scope="module")
def moto_checking_signatures() -> Iterator[tuple[MotoServer, str, str]]:
    """A second moto that verifies SigV4 signatures against an IAM user's keys.

    ``INITIAL_NO_AUTH_ACTION_COUNT=3`` lets the first three requests (creating the user, its
    key and its policy) through unsigned; every later request must be signed correctly.
    """
    import json

    import botocore.session

    server = MotoServer(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        iam: Any = botocore.session.Session().create_client(
            "iam",
            region_name=MOTO_REGION,
            endpoint_url=server.url,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        iam.create_user(UserName="tester")
        key = iam.create_access_key(UserName="tester")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="tester", PolicyName="all", PolicyDocument=json.dumps(policy))
        iam.close()
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.stop()


async def test_moto_accepts_our_signatures_and_rejects_bad_ones(
    moto_checking_signatures: tuple[MotoServer, str, str], aws_isolated: Path
) -> None:
    server, key_id, secret = moto_checking_signatures
    bucket = f"sig-{uuid.uuid4().hex[:12]}"
    storage = make(server.url, bucket, access_key_id=key_id, secret_access_key=secret)
    admin = await storage._client()
    await admin.create_bucket(Bucket=bucket)
    async with storage:
        for key in TRICKY_KEYS:
            version = await storage.put(key, key.encode())  # signed by botocore
            assert bytes((await storage.get(key)).data) == key.encode()  # signed by us
            assert bytes((await storage.get(key, RangeByteRequest(1, 3))).data) == key.encode()[1:3]
            assert await storage.get_if_changed(key, version) is None
        for bad in (
            make(server.url, bucket, access_key_id=key_id, secret_access_key="wrong"),
            make(server.url, bucket, access_key_id="AKIAUNKNOWN0000000", secret_access_key=secret),
        ):
            async with bad:
                with pytest.raises(AuthenticationError) as raised:
                    await bad.get("plain")
                assert secret not in str(raised.value)
                with pytest.raises(AuthenticationError):
                    await bad.put("plain", b"x")


# --- what goes over the wire -------------------------------------------------------------


async def test_requester_pays_and_custom_headers_on_every_request(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        requester_pays=True,
        headers={"X-Everywhere": "all"},
        read_headers={"X-Read-Only": "r"},
        write_headers={"x-amz-meta-from-header": "w"},
        settings=StorageSettings(
            minimum_size_for_multipart_upload=64,
            retries=StorageRetriesSettings(max_tries=1),
        ),
    )
    async with storage:
        version = await storage.put("small", b"x" * 10, mode="create")
        await storage.put("large", b"y" * 100)  # multipart: create, one part, complete
        assert bytes((await storage.get("small")).data) == b"x" * 10
        await storage.get_if_changed("small", version)
        info = await storage.head("large")
        assert info.metadata["from-header"] == "w"  # write headers reach the object
        await storage.copy("small", "copied", if_version=version)
        assert [i.key async for i in storage.list()] == ["copied", "large", "small"]
        await storage.list_dir("")
        await storage.delete_many(["small", "copied"])
    sent = s3_proxy.recorded()
    kinds = {(r.method, frozenset(r.query_params)) for r in sent}
    assert {("GET", frozenset()), ("HEAD", frozenset()), ("PUT", frozenset())} <= kinds
    assert ("POST", frozenset({"uploads"})) in kinds
    assert ("PUT", frozenset({"partNumber", "uploadId"})) in kinds
    assert ("POST", frozenset({"uploadId"})) in kinds
    assert ("POST", frozenset({"delete"})) in kinds
    assert ("GET", frozenset({"list-type", "prefix", "max-keys", "encoding-type"})) in kinds
    for request in sent:
        assert request.headers.get("x-amz-request-payer") == "requester", request
        assert request.headers.get("x-everywhere") == "all", request
        is_read = request.method in ("GET", "HEAD")
        assert ("x-read-only" in request.headers) == is_read, request
        assert ("x-amz-meta-from-header" in request.headers) == (not is_read), request
        signed = request.headers["authorization"].split("SignedHeaders=")[1]
        assert "x-amz-request-payer" in signed  # added before signing


@pytest.mark.parametrize(
    "options",
    [{}, {"requester_pays": True, "headers": {"X-Custom": "v"}, "checksum_algorithm": "crc32"}],
)
async def test_a_server_cannot_tell_which_path_sent_a_request(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, options: dict[str, Any]
) -> None:
    """Each lean request next to the same call made through the storage's aiobotocore client:
    the proxy records the same method, path, query, body and headers (names and values; the
    date and signature only differ when the clock ticked between the two)."""
    from botocore.exceptions import ClientError

    storage = make(s3_proxy.url, bucket, session_token="token", **options)
    extra = {"ChecksumAlgorithm": "CRC32"} if "checksum_algorithm" in options else {}
    if options.get("requester_pays"):
        extra["RequestPayer"] = "requester"
    pairs: list[tuple[RecordedRequest, RecordedRequest]] = []
    async with storage:
        client: Any = await storage._client()
        state: dict[str, Any] = {}

        async def both(lean: Callable[[], Any], sdk: Callable[[], Any]) -> None:
            s3_proxy.clear()
            await lean()
            (ours,) = s3_proxy.recorded()
            call = sdk()  # built before clear(): it may read the lean request's write id
            s3_proxy.clear()
            with contextlib.suppress(ClientError):  # a repeated condition fails: same request
                await call
            (theirs,) = s3_proxy.recorded()
            pairs.append((ours, theirs))

        async def put_create() -> None:
            state["v"] = await storage.put("chunks/a b", b"1", mode="create")

        def write_id() -> str:  # the lean request's, sent again by botocore
            return s3_proxy.recorded()[0].headers["x-amz-meta-" + WRITE_ID_METADATA_KEY]

        key = "p/chunks/a b"
        await both(
            lambda: storage.put("chunks/a b", b"hello", content_type="a/b", metadata={"m": "v"}),
            lambda: client.put_object(
                Bucket=bucket,
                Key=key,
                Body=b"hello",
                ContentType="a/b",
                Metadata={"m": "v"},
                **extra,
            ),
        )
        await storage.delete("chunks/a b")
        await both(
            put_create,
            lambda: client.put_object(
                Bucket=bucket,
                Key=key,
                Body=b"1",
                IfNoneMatch="*",
                Metadata={WRITE_ID_METADATA_KEY: write_id()},
                **extra,
            ),
        )
        await both(
            lambda: storage.put("chunks/a b", b"2", mode=state["v"]),
            lambda: client.put_object(
                Bucket=bucket,
                Key=key,
                Body=b"2",
                IfMatch=state["v"].etag.strip('"'),
                Metadata={WRITE_ID_METADATA_KEY: write_id()},
                **extra,
            ),
        )
        await both(
            lambda: storage.head("chunks/a b"), lambda: client.head_object(Bucket=bucket, Key=key)
        )
        await both(
            lambda: storage.get("chunks/a b"), lambda: client.get_object(Bucket=bucket, Key=key)
        )
        current = (await storage.head("chunks/a b")).version
        assert current.etag is not None
        if_match = current.etag.strip('"')
        payer = {"RequestPayer": "requester"} if options.get("requester_pays") else {}
        copy_to = "meta/c d+é%~"
        await both(
            lambda: storage.copy("chunks/a b", copy_to, if_version=current),
            lambda: client.copy_object(
                Bucket=bucket,
                Key=f"p/{copy_to}",
                CopySource={"Bucket": bucket, "Key": key},
                CopySourceIfMatch=if_match,
                **payer,
            ),
        )
        assert (pairs[-1][0].status, pairs[-1][1].status) == (200, 200)  # both copied
        await both(
            lambda: storage.copy(copy_to, "chunks/a b"),
            lambda: client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": f"p/{copy_to}"},
                **payer,
            ),
        )
        await storage.put("z", b"")
        storage._list_page_size = 1
        page = await storage._list_page("p/", None, None)
        assert page.next_token is not None
        token = page.next_token
        await both(
            lambda: storage._list_page("p/", None, None),
            lambda: client.list_objects_v2(Bucket=bucket, Prefix="p/", MaxKeys=1),
        )
        await both(
            lambda: storage._list_page("p/", "/", token),
            lambda: client.list_objects_v2(
                Bucket=bucket, Prefix="p/", MaxKeys=1, ContinuationToken=token, Delimiter="/"
            ),
        )
        await both(
            lambda: storage.delete("chunks/a b"),
            lambda: client.delete_object(Bucket=bucket, Key=key),
        )
    assert [ours.method for ours, _ in pairs] == [
        "PUT", "PUT", "PUT", "HEAD", "GET", "PUT", "PUT", "GET", "GET", "DELETE"
    ]  # fmt: skip
    for ours, theirs in pairs:
        seen = (ours.method, ours.path, ours.query)
        assert seen == (theirs.method, theirs.path, theirs.query)
        assert ours.body_size == theirs.body_size, seen
        mine, other = dict(ours.headers), dict(theirs.headers)
        if mine["x-amz-date"] != other["x-amz-date"]:  # the clock ticked in between
            for headers in (mine, other):
                del headers["x-amz-date"]
                headers["authorization"] = headers["authorization"].split(", Signature=")[0]
        assert mine == other, seen


async def test_conditional_headers_on_the_wire(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url, bucket, settings=StorageSettings(minimum_size_for_multipart_upload=64)
    )
    async with storage:
        first = await storage.put("k", b"1", mode="create")
        second = await storage.put("k", b"2", mode=first)
        await storage.put("big", b"b" * 100, mode="create")
        await storage.copy("k", "k2", if_version=second)
        assert await storage.get_if_changed("k", second) is None
    puts = only(s3_proxy.recorded(), "PUT")
    assert puts[0].headers["if-none-match"] == "*"
    assert first.etag is not None
    assert second.etag is not None
    assert puts[1].headers["if-match"] == first.etag.strip('"')  # quotes stripped, only here
    complete = only(s3_proxy.recorded(), "POST", "uploadId")[0]
    assert complete.headers["if-none-match"] == "*"
    create = only(s3_proxy.recorded(), "POST", "uploads")[0]
    assert f"x-amz-meta-{WRITE_ID_METADATA_KEY}" in create.headers
    copy = next(r for r in puts if "x-amz-copy-source" in r.headers)
    assert copy.headers["x-amz-copy-source-if-match"] == second.etag.strip('"')
    conditional_get = next(r for r in s3_proxy.recorded("GET") if "if-none-match" in r.headers)
    assert conditional_get.headers["if-none-match"] == second.etag  # verbatim, quotes kept
    assert conditional_get.status == 304


async def test_unsafe_settings_send_no_conditions(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    unsafe = StorageSettings(
        unsafe_use_conditional_create=False,
        unsafe_use_conditional_update=False,
        minimum_size_for_multipart_upload=64,
    )
    storage = make(s3_proxy.url, bucket, settings=unsafe)
    async with storage:
        stale = await storage.put("k", b"1", mode="create")
        await storage.put("k", b"2", mode="create")
        await storage.put("k", b"3", mode=stale)
        await storage.put("big", b"b" * 100, mode="create")
        await storage.put("big", b"c" * 100, mode=stale)
        await storage.copy("k", "k2", if_version=stale)
        assert bytes((await storage.get("k2")).data) == b"3"
    for request in s3_proxy.recorded():
        assert not {"if-none-match", "if-match", "x-amz-copy-source-if-match"} & set(
            request.headers
        )
        if request.method == "PUT" and not request.query_params:  # single PUTs
            assert f"x-amz-meta-{WRITE_ID_METADATA_KEY}" not in request.headers


async def test_tigris_consistency_headers_on_every_request(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = tigris_storage(
        bucket=bucket,
        prefix="p",
        region="iad",
        endpoint_url=s3_proxy.url,
        allow_http=True,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
        headers={"x-tigris-regions": "mine", "Cache-Control": "max-age=60"},
        settings=FAST,
    )
    async with storage:
        await storage.put("k", b"v")
        assert bytes((await storage.get("k")).data) == b"v"
        await storage.head("k")
        [_ async for _ in storage.list()]
        await storage.delete("k")  # DeleteObject
        await storage.delete_many(["k", "other"])  # DeleteObjects, through aiobotocore
    sent = s3_proxy.recorded()
    assert {r.method for r in sent} == {"PUT", "GET", "HEAD", "DELETE", "POST"}
    for request in sent:
        assert request.headers["x-tigris-regions"] == "iad", request
        assert request.headers["x-tigris-consistent"] == "true", request
        expected_cache = "no-cache" if request.method in ("GET", "HEAD") else "max-age=60"
        assert request.headers["cache-control"] == expected_cache, request
        assert "/iad/s3/aws4_request" in request.headers["authorization"]
    weak = tigris_storage(
        bucket=bucket,
        prefix="p",
        use_weak_consistency=True,
        endpoint_url=s3_proxy.url,
        allow_http=True,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
    )
    s3_proxy.clear()
    async with weak:
        assert not await weak.exists("k")
    assert all("x-tigris-consistent" not in r.headers for r in s3_proxy.recorded())


def _make_public(s3_admin: Any, bucket: str, keys: dict[str, bytes]) -> None:
    s3_admin.put_bucket_acl(Bucket=bucket, ACL="public-read")
    for key, data in keys.items():
        s3_admin.put_object(Bucket=bucket, Key=key, Body=data, ACL="public-read")


async def test_anonymous_requests_are_unsigned(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="p/public", Body=b"open", ACL="public-read")
    s3_admin.put_object(Bucket=bucket, Key="p/private", Body=b"closed")
    storage = s3_storage(
        bucket=bucket,
        prefix="p",
        endpoint_url=s3_proxy.url,
        allow_http=True,
        force_path_style=True,
        anonymous=True,
        settings=FAST,
    )
    async with storage:
        assert bytes((await storage.get("public")).data) == b"open"
        assert (await storage.head("public")).size == 4
        with pytest.raises(PermissionDeniedError):
            await storage.get("private")  # the lean path
        with pytest.raises(PermissionDeniedError):
            await storage.head("private")  # aiobotocore
    sent = s3_proxy.recorded()
    assert len(sent) == 4  # 403 is not retried
    for request in sent:
        assert "authorization" not in request.headers
        assert "x-amz-security-token" not in request.headers


async def test_r2_public_bucket_addressing(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    _make_public(s3_admin, bucket, {"some/path/zarr.json": b"{}"})
    storage = r2_storage(
        prefix=f"{bucket}/some/path", endpoint_url=s3_proxy.url, allow_http=True, anonymous=True
    )
    async with storage:
        assert bytes((await storage.get("zarr.json")).data) == b"{}"
        assert await storage.exists("zarr.json")
    sent = s3_proxy.recorded()
    assert [r.path for r in sent] == [f"/{bucket}/some/path/zarr.json"] * 2
    assert all("authorization" not in r.headers for r in sent)


async def test_r2_signs_for_region_auto_path_style(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = r2_storage(
        bucket=bucket,
        prefix="x",
        endpoint_url=s3_proxy.url,
        allow_http=True,
        access_key_id=MOTO_KEY,
        secret_access_key=MOTO_KEY,
    )
    async with storage:
        await storage.put("k", b"v")
        assert bytes((await storage.get("k")).data) == b"v"
    for request in s3_proxy.recorded():
        assert request.path == f"/{bucket}/x/k"
        assert "/auto/s3/aws4_request" in request.headers["authorization"]


async def test_virtual_hosted_addressing_and_proxies(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without force_path_style the bucket goes in the host name, on both request paths; both
    honour HTTP_PROXY (here the recording proxy, which maps the bucket host to moto)."""
    monkeypatch.setenv("HTTP_PROXY", s3_proxy.url)
    storage = make(f"http://{s3_proxy.virtual_suffix}", bucket, force_path_style=False)
    async with storage:
        await storage.put("a/b c", b"v")
        assert bytes((await storage.get("a/b c")).data) == b"v"
        assert (await storage.head("a/b c")).size == 1
    sent = s3_proxy.recorded()
    assert len(sent) == 3
    for request in sent:
        assert request.host == f"{bucket}.{s3_proxy.virtual_suffix}"
        assert request.headers["host"] == request.host
        assert request.path == f"/{bucket}/p/a/b%20c"  # after the proxy's rewrite to moto


async def test_region_defaults_when_an_endpoint_has_none(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make(s3_proxy.url, bucket, region=None)
    async with storage:
        await storage.put("k", b"v")
        await storage.get("k")
    assert all("/us-east-1/s3/" in r.headers["authorization"] for r in s3_proxy.recorded())
    s3_proxy.clear()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    storage = make(s3_proxy.url, bucket, region=None)
    async with storage:
        await storage.get("k")
        await storage.head("k")
    assert all("/eu-central-1/s3/" in r.headers["authorization"] for r in s3_proxy.recorded())


# --- credentials from the environment ---------------------------------------------------


async def test_from_env_environment_variables(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    storage = make(s3_proxy.url, bucket, access_key_id=None, secret_access_key=None)
    assert storage.credentials == S3Credentials.FromEnv()
    async with storage:
        await storage.put("k", b"v")
        assert bytes((await storage.get("k")).data) == b"v"
    for request in s3_proxy.recorded():
        assert "Credential=ENVKEY/" in request.headers["authorization"]
        assert request.headers["x-amz-security-token"] == "env-session-token"


async def test_the_chunk_path_builds_no_sdk_client_and_from_env_chains_are_shared(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUT, conditional PUT, GET, HEAD, LIST, DELETE, copy and conditional copy of a fresh
    (unpickled) storage, and a repository's create and commit (which copies the repo info
    object), build neither an aiobotocore client nor its pool; from-env storages of one loop
    walk botocore's credential chain once, and again when the environment changes."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    template = make(s3_proxy.url, bucket, access_key_id=None, secret_access_key=None)
    first, second = pickle.loads(pickle.dumps(template)), pickle.loads(pickle.dumps(template))
    for storage in (first, second):
        version = await storage.put("k", b"v")
        await storage.put("k", b"w", mode=version)
        await storage.put("new", b"n", mode="create")
        assert bytes((await storage.get("k")).data) == b"w"
        assert (await storage.head("k")).size == 1
        assert [i.key async for i in storage.list()] == ["k", "new"]
        await storage.delete("new")
        copied = await storage.copy("k", "c", if_version=await storage.put("k", b"y"))
        assert copied == (await storage.head("c")).version
        await storage.copy("k", "c2")
        assert bytes((await storage.get("c2")).data) == b"y"
        for key in ("c", "c2"):
            await storage.delete(key)
        clients = storage._loops.peek()
        assert clients is not None
        assert (clients._s3, clients.http) == (None, None)  # no SDK client, no aiohttp pool
    one, two = first._loops.peek(), second._loops.peek()
    assert one is not None
    assert two is not None
    assert one._env_credentials is two._env_credentials  # the chain was walked once
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "OTHERKEY")
    third = pickle.loads(pickle.dumps(template))
    await third.put("k", b"x")
    assert "Credential=OTHERKEY/" in s3_proxy.recorded()[-1].headers["authorization"]
    for storage in (first, second, third):
        await storage.aclose()
    fresh = pickle.loads(pickle.dumps(make(s3_proxy.url, bucket, prefix="repo")))
    repo = await Repository.create_async(fresh)
    session = await repo.writable_session_async("main")
    await session.storage.put("zarr.json", b"{}")
    await session.commit_async("one")
    assert any("x-amz-copy-source" in r.headers for r in s3_proxy.recorded("PUT"))
    clients = fresh._loops.peek()
    assert clients is not None
    assert (clients._s3, clients.http) == (None, None)
    await fresh.aclose()


async def test_from_env_profile_in_shared_files(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = aws_isolated / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = x\n\n"
        f"[analysis]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = {SECRET}\n"
    )
    config = aws_isolated / "config"
    config.write_text("[default]\nregion = us-east-1\n\n[profile analysis]\nregion = eu-west-3\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "analysis")
    storage = make(s3_proxy.url, bucket, access_key_id=None, secret_access_key=None, region=None)
    async with storage:
        await storage.put("k", b"v")
        assert bytes((await storage.get("k")).data) == b"v"
    sent = s3_proxy.recorded()
    assert len(sent) == 2
    for request in sent:
        assert "Credential=PROFILEKEY/" in request.headers["authorization"]
        assert "/eu-west-3/s3/aws4_request" in request.headers["authorization"]


async def test_from_env_without_credentials_is_a_clear_error(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket, access_key_id=None, secret_access_key=None)
    async with storage:
        with pytest.raises(AuthenticationError, match="anonymous=True"):
            await storage.get("k")
        with pytest.raises(AuthenticationError, match="No AWS credentials"):
            await storage.put("k", b"v")
    assert s3_proxy.recorded() == []


async def test_expired_static_credentials_are_never_sent(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket, expires_after=datetime.now(UTC) - timedelta(seconds=1))
    async with storage:
        with pytest.raises(AuthenticationError, match="expired"):
            await storage.get("k")
        with pytest.raises(AuthenticationError, match="expired"):
            await storage.put("k", b"v")
    assert s3_proxy.recorded() == []


# --- retries and faults ------------------------------------------------------------------

TRANSIENT_FAULTS = [
    ("status", 503, "SlowDown"),
    ("status", 500, "InternalError"),
    ("status", 502, "BadGateway"),
    ("status", 504, "GatewayTimeout"),
    ("status", 429, "TooManyRequests"),
    ("status", 408, "RequestTimeout"),
    ("status", 499, "ClientClosedRequest"),
    ("reset", 0, ""),
    ("drop_response", 0, ""),
]


def _method_is(method: str) -> Callable[[RecordedRequest], bool]:
    return lambda request: request.method == method


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
async def test_transient_failures_are_retried_on_both_paths(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, fault: tuple[str, int, str]
) -> None:
    kind, status, code = fault
    storage = make(s3_proxy.url, bucket)
    async with storage:
        await storage.put("k", b"0123456789")
        s3_proxy.clear()
        for method in ("GET", "HEAD", "PUT"):
            s3_proxy.inject(kind, _method_is(method), times=2, status=status, code=code)
        assert bytes((await storage.get("k", RangeByteRequest(2, 5))).data) == b"234"
        assert (await storage.head("k")).size == 10
        await storage.put("k", b"new")
        assert [i.key async for i in storage.list()] == ["k"]
    sent = s3_proxy.recorded()
    for method in ("GET", "HEAD", "PUT"):
        attempts = [r for r in sent if r.method == method and not r.query_params]
        assert [r.fault for r in attempts] == [kind, kind, None], method


async def test_a_body_cut_short_is_read_again(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    data = bytes(range(256)) * 40
    split = StorageSettings(
        retries=FAST.retries,
        concurrency=StorageConcurrencySettings(
            ideal_concurrent_request_size=4000, max_concurrent_requests_for_object=3
        ),
    )
    storage = make(s3_proxy.url, bucket, settings=split)
    async with storage:
        await storage.put("k", data)
        for _ in range(3):
            await storage.put(f"list/{_}", b"x")
        s3_proxy.clear()

        def whole(r: RecordedRequest) -> bool:
            return r.method == "GET" and not r.query_params and "range" not in r.headers

        s3_proxy.inject("truncate", whole)
        s3_proxy.inject("truncate", lambda r: r.method == "GET" and "range" in r.headers)
        assert bytes((await storage.get("k")).data) == data  # whole object
        assert bytes((await storage.get("k", RangeByteRequest(10, 9000))).data) == data[10:9000]
        s3_proxy.inject("truncate", lambda r: "list-type" in r.query_params, times=1)
        assert len([i async for i in storage.list("list")]) == 3  # aiobotocore
    truncated = [r for r in s3_proxy.recorded() if r.fault == "truncate"]
    assert len(truncated) == 3
    ranged = [r for r in s3_proxy.recorded("GET") if "range" in r.headers]
    assert len(ranged) == 4  # 3 parts, one of them read twice


def _copies(proxy: RecordingProxy) -> list[RecordedRequest]:
    return [r for r in proxy.recorded("PUT") if "x-amz-copy-source" in r.headers]


COPY_KEYS = ["a b", "unicodé/ключ/鍵/🧊", "x+y", "100%/%41", "~t!'()*;=@&$,", "plain"]


async def test_copies_on_the_lean_path(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    """CopyObject against moto (the proxy enforces ``x-amz-copy-source-if-match``, which moto
    ignores): keys that need percent-encoding copy the right object, a stale condition is
    PreconditionFailedError and copies nothing, a missing source is ObjectNotFoundError,
    and none of it builds an aiobotocore client."""
    storage = make(s3_proxy.url, bucket)
    async with storage:
        for key in COPY_KEYS:
            version = await storage.put(key, key.encode())
            copied = await storage.copy(key, f"copies/{key}", if_version=version)
            raw = s3_admin.get_object(Bucket=bucket, Key=f"p/copies/{key}")
            assert raw["Body"].read() == key.encode()
            assert copied == VersionInfo(etag=raw["ETag"])
            await storage.copy(f"copies/{key}", f"again/{key}")
            assert bytes((await storage.get(f"again/{key}")).data) == key.encode()
        stale = await storage.put("src", b"1")
        await storage.put("src", b"2")
        s3_proxy.clear()
        with pytest.raises(PreconditionFailedError, match="no longer at the expected version"):
            await storage.copy("src", "dst", if_version=stale)
        with pytest.raises(ObjectNotFoundError):
            await storage.copy("missing", "dst")
        with pytest.raises(ObjectNotFoundError):
            await storage.copy("missing", "dst", if_version=stale)
        assert not await storage.exists("dst")
        assert [r.status for r in _copies(s3_proxy)] == [412, 404, 404]  # none retried
        clients = storage._loops.peek()
        assert clients is not None
        assert clients._s3 is None


def _is_copy(request: RecordedRequest) -> bool:
    return "x-amz-copy-source" in request.headers


async def test_a_copy_that_fails_in_a_200_response(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    """S3 reports an error found during a copy in a 200 response's body: InternalError is
    retried, PreconditionFailed is the failed condition and NoSuchKey the missing source
    (neither retried); a 200 body that is neither an Error nor a CopyObjectResult with an
    ETag, or larger than a result can be, is retried and then given up on."""
    storage = make(s3_proxy.url, bucket)
    async with storage:
        version = await storage.put("src", b"data")
        s3_proxy.clear()
        s3_proxy.inject("status", _is_copy, status=200, code="InternalError")
        copied = await storage.copy("src", "dst", if_version=version)
        assert copied == (await storage.head("dst")).version
        s3_proxy.inject("status", _is_copy, status=200, code="PreconditionFailed")
        with pytest.raises(PreconditionFailedError, match="sent in a 200 response"):
            await storage.copy("src", "dst2", if_version=version)
        s3_proxy.inject("status", _is_copy, status=200, code="NoSuchKey")
        with pytest.raises(ObjectNotFoundError):
            await storage.copy("src", "dst2")
        assert [r.fault for r in _copies(s3_proxy)] == ["status", None, "status", "status"]
        assert not await storage.exists("dst2")
        result = _RESULT_NS + b'<ETag>"e"</ETag></CopyObjectResult>'
        for body in (
            b"",
            b"<html>bad gateway</html>",
            b"<CopyObjectResult><LastModified>x</LastModified></CopyObjectResult>",
            b" " * MAX_COPY_RESULT_BYTES + result,
        ):
            s3_proxy.clear()
            s3_proxy.inject("status", _is_copy, status=200, body=body, times=100)
            with pytest.raises(RetriesExhaustedError) as raised:
                await storage.copy("src", "dst3")
            assert isinstance(raised.value.__cause__, ResponseIntegrityError)
            assert len(_copies(s3_proxy)) == FAST.retries.max_tries  # type: ignore[union-attr]


async def test_botocore_does_not_retry_and_our_budget_is_exact(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    three = StorageSettings(
        retries=StorageRetriesSettings(max_tries=3, initial_backoff_ms=1, max_backoff_ms=2)
    )
    storage = make(s3_proxy.url, bucket, settings=three)
    async with storage:
        s3_proxy.inject("status", times=100, status=503, code="SlowDown")
        with pytest.raises(RetriesExhaustedError) as get_error:
            await storage.get("k")
        assert isinstance(get_error.value.__cause__, ThrottledError)
        assert get_error.value.attempts == 3
        with pytest.raises(RetriesExhaustedError) as put_error:
            await storage.put("k", b"v")
        assert isinstance(put_error.value.__cause__, ThrottledError)
    sent = s3_proxy.recorded()
    assert [r.method for r in sent] == ["GET"] * 3 + ["PUT"] * 3
    client_config: Any = (await storage._client()).meta.config
    assert client_config.retries["total_max_attempts"] == 1
    assert client_config.request_checksum_calculation == "when_required"
    assert client_config.response_checksum_validation == "when_required"
    await storage.aclose()


async def test_failures_that_retrying_cannot_fix_are_raised_at_once(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket, secret_access_key=SECRET)
    async with storage:
        s3_proxy.inject("status", times=2, status=403, code="AccessDenied")
        with pytest.raises(PermissionDeniedError):
            await storage.get("k")
        with pytest.raises(PermissionDeniedError):
            await storage.put("k", b"v")
        s3_proxy.inject("status", times=1, status=403, code="SignatureDoesNotMatch")
        with pytest.raises(AuthenticationError) as raised:
            await storage.get("k")
        assert SECRET not in str(raised.value)
        with pytest.raises(ObjectNotFoundError):
            await storage.get("k")
    assert len(s3_proxy.recorded()) == 4


async def test_attempt_and_stream_timeouts_are_retried(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    attempt_limited = StorageSettings(
        retries=FAST.retries, timeouts=StorageTimeoutSettings(operation_attempt_timeout_ms=300)
    )
    storage = make(s3_proxy.url, bucket, settings=attempt_limited)
    stalled = make(s3_proxy.url, bucket, network_stream_timeout_seconds=1)
    async with storage, stalled:
        await storage.put("k", b"v")
        s3_proxy.clear()
        s3_proxy.inject("delay", lambda r: r.method == "GET", delay=1.0)
        s3_proxy.inject("delay", lambda r: r.method == "HEAD", delay=1.0)
        assert bytes((await storage.get("k")).data) == b"v"
        assert (await storage.head("k")).size == 1
        s3_proxy.inject("delay", lambda r: r.method == "GET", delay=1.5)
        assert bytes((await stalled.get("k")).data) == b"v"
        no_retries = storage.with_settings(
            StorageSettings(
                retries=StorageRetriesSettings(max_tries=1),
                timeouts=StorageTimeoutSettings(operation_attempt_timeout_ms=200),
            )
        )
        s3_proxy.inject("delay", lambda r: r.method == "GET", delay=0.6)
        with pytest.raises(RetriesExhaustedError) as raised:
            await no_retries.get("k")
        assert isinstance(raised.value.__cause__, StorageTimeoutError)
        await no_retries.aclose()
    assert [r.fault for r in s3_proxy.recorded("GET")] == ["delay", None, "delay", None, "delay"]


async def test_connection_refused_is_a_transient_error(aws_isolated: Path) -> None:
    storage = make(
        "http://127.0.0.1:1",
        "bkt",
        settings=StorageSettings(retries=StorageRetriesSettings(max_tries=2, initial_backoff_ms=1)),
    )
    async with storage:
        for operation in (storage.get("k"), storage.put("k", b"v")):
            with pytest.raises(RetriesExhaustedError) as raised:
                await operation
            assert isinstance(raised.value.__cause__, ConnectionLostError)


# --- conditional writes whose response was lost -------------------------------------------


async def test_lost_response_of_a_conditional_create_succeeds_exactly_once(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    async with storage:
        s3_proxy.inject("drop_response", lambda r: r.method == "PUT")
        version = await storage.put("repo", b"mine", mode="create")
        head = s3_admin.head_object(Bucket=bucket, Key="p/repo")
        assert version.etag == head["ETag"]
        assert WRITE_ID_METADATA_KEY in head["Metadata"]
        assert bytes((await storage.get("repo")).data) == b"mine"
        with pytest.raises(AlreadyExistsError):  # someone else's object is still refused
            await storage.put("repo", b"theirs", mode="create")
    puts = only(s3_proxy.recorded(), "PUT")
    assert [(r.fault, r.status) for r in puts] == [("drop_response", 200), (None, 412), (None, 412)]


async def test_lost_response_of_a_conditional_update_succeeds_exactly_once(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    async with storage:
        first = await storage.put("repo", b"1")
        s3_proxy.clear()
        s3_proxy.inject("drop_response", lambda r: r.method == "PUT")
        second = await storage.put("repo", b"2", mode=first)
        assert second != first
        assert (await storage.head("repo")).version == second
        with pytest.raises(PreconditionFailedError):  # the stale version is still refused
            await storage.put("repo", b"3", mode=first)
    puts = only(s3_proxy.recorded(), "PUT")
    assert [r.status for r in puts] == [200, 412, 412]


async def test_without_metadata_a_lost_response_cannot_be_proven_ours(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        settings=StorageSettings(retries=FAST.retries, unsafe_use_metadata=False),
    )
    async with storage:
        s3_proxy.inject("drop_response", lambda r: r.method == "PUT")
        with pytest.raises(AlreadyExistsError):
            await storage.put("repo", b"mine", mode="create")


async def test_lost_response_of_a_multipart_completion_is_recovered(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        settings=StorageSettings(retries=FAST.retries, minimum_size_for_multipart_upload=100),
    )
    async with storage:
        for mode in ("create", "overwrite"):
            # The completion happens but its answer is lost; the retry finds no upload (what
            # S3 answers once the upload is gone; moto keeps answering 200, so we inject it).
            s3_proxy.inject("drop_response", _is_complete)
            s3_proxy.inject("status", _is_complete, status=404, code="NoSuchUpload")
            version = await storage.put(f"big-{mode}", b"z" * 1000, mode=mode)
            assert (await storage.head(f"big-{mode}")).version == version
        s3_proxy.inject("status", _is_complete, status=404, code="NoSuchUpload")
        with pytest.raises(MultipartUploadVanishedError):  # nothing of ours there: an error
            await storage.put("never", b"z" * 1000, mode="create")
        assert not await storage.exists("never")
    completes = only(s3_proxy.recorded(), "POST", "uploadId")
    assert [(r.fault, r.status) for r in completes] == [
        ("drop_response", 200),
        ("status", 404),
        ("drop_response", 200),
        ("status", 404),
        ("status", 404),
    ]
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _is_complete(request: RecordedRequest) -> bool:
    return request.method == "POST" and request.query_params == {"uploadId"}


# --- multipart uploads, storage classes, checksums, batch deletes -------------------------

MIB = 1024 * 1024


async def test_multipart_upload_in_equal_parts_uploaded_concurrently(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    data = os.urandom(11 * MIB)
    settings_ = StorageSettings(
        retries=FAST.retries,
        minimum_size_for_multipart_upload=len(data),
        concurrency=StorageConcurrencySettings(ideal_concurrent_request_size=4 * MIB),
    )
    storage = make(s3_proxy.url, bucket, settings=settings_)
    async with storage:
        version = await storage.put(
            "big", data, content_type="application/x-test", metadata={"ic_kind": "m"}
        )
        assert version.etag is not None
        assert version.etag.endswith('-2"')
        assert bytes((await storage.get("big")).data) == data
        info = await storage.head("big")
        assert (info.size, info.content_type, info.metadata["ic_kind"]) == (
            len(data),
            "application/x-test",
            "m",
        )
        await storage.put("just-below", data[:-1])  # one byte below the threshold: one PUT
    parts = only(s3_proxy.recorded(), "PUT", "partNumber")
    # 11 MiB in parts of at least 5 MiB: two equal-ish parts, never an empty one
    assert sorted(r.body_size for r in parts) == [len(data) // 2, len(data) - len(data) // 2]
    single = [r for r in s3_proxy.recorded("PUT") if not r.query_params]
    assert [r.body_size for r in single] == [len(data) - 1]
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_failed_multipart_uploads_are_aborted(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        settings=StorageSettings(retries=FAST.retries, minimum_size_for_multipart_upload=10),
    )
    async with storage:
        await storage.put("k", b"x")
        with pytest.raises(AlreadyExistsError):  # the condition fails on CompleteMultipartUpload
            await storage.put("k", b"y" * 100, mode="create")
        s3_proxy.inject(
            "status", lambda r: "partNumber" in r.query_params, status=403, code="AccessDenied"
        )
        with pytest.raises(PermissionDeniedError):
            await storage.put("other", b"y" * 100)
        s3_proxy.inject("delay", lambda r: "partNumber" in r.query_params, delay=5)
        task = asyncio.ensure_future(storage.put("cancelled", b"y" * 100))
        for _ in range(500):
            if any(r.fault == "delay" for r in s3_proxy.recorded()):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bytes((await storage.get("k")).data) == b"x"
    aborts = only(s3_proxy.recorded(), "DELETE", "uploadId")
    assert len(aborts) == 3
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_storage_classes_for_chunks_and_metadata(
    s3_proxy: RecordingProxy, bucket: str, s3_admin: Any, aws_isolated: Path
) -> None:
    classes = StorageSettings(
        metadata_storage_class="STANDARD_IA",
        chunks_storage_class="ONEZONE_IA",
        minimum_size_for_multipart_upload=100,
    )
    storage = make(s3_proxy.url, bucket, settings=classes)
    async with storage:
        await storage.put("chunks/c/0", b"chunk")
        await storage.put("snapshots/s1", b"snap")
        await storage.put("chunks/c/1", b"c" * 200)  # multipart
        await storage.copy("snapshots/s1", "chunks/c/2")
        await storage.copy("chunks/c/0", "overwritten/o")
    default = make(s3_proxy.url, bucket, settings=StorageSettings(storage_class="STANDARD_IA"))
    async with default:
        await default.put("chunks/c/3", b"x")

    def storage_class(key: str) -> str:
        return str(
            s3_admin.head_object(Bucket=bucket, Key=f"p/{key}").get("StorageClass", "STANDARD")
        )

    assert storage_class("chunks/c/0") == "ONEZONE_IA"
    assert storage_class("chunks/c/1") == "ONEZONE_IA"
    assert storage_class("chunks/c/2") == "ONEZONE_IA"
    assert storage_class("snapshots/s1") == "STANDARD_IA"
    assert storage_class("overwritten/o") == "STANDARD_IA"
    assert storage_class("chunks/c/3") == "STANDARD_IA"  # both fall back to storage_class


@pytest.mark.parametrize("algorithm", ["crc32", ChecksumAlgorithm.Sha256])
async def test_checksum_algorithm_on_uploads_and_deletes(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path, algorithm: Any
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        checksum_algorithm=algorithm,
        settings=StorageSettings(retries=FAST.retries, minimum_size_for_multipart_upload=100),
    )
    name = S3Options(checksum_algorithm=algorithm).checksum_algorithm
    assert name is not None
    async with storage:
        await storage.put("small", b"s")
        await storage.put("large", b"l" * 300)
        assert bytes((await storage.get("large")).data) == b"l" * 300
        await storage.delete_many(["small", "large"])
    uploads = only(s3_proxy.recorded(), "PUT") + only(s3_proxy.recorded(), "POST", "delete")
    assert len(uploads) == 3
    for request in uploads:
        sent = {k for k in request.headers if k.startswith("x-amz-checksum-")} | {
            request.headers.get("x-amz-trailer", ""),
            request.headers.get("x-amz-sdk-checksum-algorithm", "").lower(),
        }
        assert f"x-amz-checksum-{name.wire_name.lower()}" in sent or name.wire_name.lower() in sent


async def test_no_extra_checksums_by_default(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    async with storage:
        await storage.put("k", b"v")
        await storage.get("k")
        await storage.delete("k")
    for request in s3_proxy.recorded():
        if request.method == "PUT":
            assert not [k for k in request.headers if k.startswith("x-amz-checksum-")]
            assert "x-amz-trailer" not in request.headers
        assert "x-amz-checksum-mode" not in request.headers


async def test_delete_many_in_batches_reports_failed_keys(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    storage._delete_batch_size = 3  # type: ignore[misc]
    async with storage:
        keys = [f"d/{i}" for i in range(7)]
        await asyncio.gather(*(storage.put(k, b"x") for k in keys))
        result = await storage.delete_many(keys)
        assert (result.deleted_objects, result.errors) == (7, {})
        assert [i async for i in storage.list("d")] == []
        await asyncio.gather(*(storage.put(k, b"x") for k in keys))
        s3_proxy.inject(
            "status", lambda r: "delete" in r.query_params, status=403, code="AccessDenied"
        )
        failed = await storage.delete_many(keys)
        assert failed.deleted_objects == 4
        assert len(failed.errors) == 3
        assert all("permission denied" in why for why in failed.errors.values())
    batches = only(s3_proxy.recorded(), "POST", "delete")
    assert len(batches) == 4  # 3 + 3 keys, twice; each lone 7th key is one DeleteObject
    assert len(only(s3_proxy.recorded(), "DELETE")) == 2


# --- clients, loops, pickling ------------------------------------------------------------


async def test_one_pool_per_loop_shared_by_both_request_paths(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    await storage.put("k", b"v")
    await storage.get("k")
    await storage.put("k2", b"v")
    await storage.delete_many(["k2", "k3"])  # DeleteObjects, aiobotocore: opens the pool
    clients = storage._loops.peek()
    assert clients is not None
    assert clients.http is not None
    assert clients.http.connector is not None
    assert clients.http.connector.limit == get_max_concurrent_requests()
    client: Any = await storage._client()
    aiobotocore_session = client._endpoint.http_session
    assert aiobotocore_session._sessions == {}  # it never opened a pool of its own
    assert aiobotocore_session.shared is clients.http
    other_loop_clients: list[Any] = []

    def in_another_loop() -> None:
        async def work() -> None:
            assert bytes((await storage.get("k")).data) == b"v"
            other_loop_clients.append(storage._loops.peek())
            await storage.aclose()

        asyncio.run(work())

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    thread.join()
    assert other_loop_clients[0] is not clients
    http = clients.http
    await storage.aclose()
    assert http.closed
    assert storage._loops.items() == []
    assert bytes((await storage.get("k")).data) == b"v"  # usable again after aclose
    await storage.aclose()


async def test_pools_of_storages_nobody_closed_are_closed(
    moto_server: MotoServer, bucket: str, aws_isolated: Path
) -> None:
    seen: list[Any] = []

    async def use_without_closing() -> None:
        storage = make(moto_server.url, bucket)
        await storage.put("k", b"v")
        await storage.delete_many(["k2", "k3"])  # DeleteObjects, aiobotocore: opens the pool
        clients = storage._loops.peek()
        assert clients is not None
        seen.append(clients.http)

    await asyncio.to_thread(asyncio.run, use_without_closing())
    assert seen[0].closed  # closed when that loop shut down

    await use_without_closing()
    gc.collect()  # the storage is gone: its pool is closed on this loop, soon
    for _ in range(50):
        if seen[1].closed:
            break
        await asyncio.sleep(0.01)
    assert seen[1].closed


def test_usable_after_unpickling_in_another_process(
    moto_server: MotoServer, bucket: str, aws_isolated: Path
) -> None:
    storages = [
        make(moto_server.url, bucket, prefix="static"),
        make(
            moto_server.url,
            bucket,
            prefix="refreshable",
            access_key_id=None,
            secret_access_key=None,
            get_credentials=_static_callback,
        ),
    ]
    script = (
        "import asyncio, pickle, sys\n"
        "async def main(storage):\n"
        "    async with storage:\n"
        "        await storage.put('from-child', b'child')\n"
        "        return bytes((await storage.get('from-child')).data)\n"
        "for storage in pickle.load(sys.stdin.buffer):\n"
        "    print(asyncio.run(main(storage)).decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(storages),
        capture_output=True,
        check=False,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["child", "child"]

    async def read_back() -> list[bytes]:
        out = []
        for storage in storages:
            async with storage:
                out.append(bytes((await storage.get("from-child")).data))
        return out

    assert asyncio.run(read_back()) == [b"child", b"child"]


async def test_etag_is_content_hash(
    moto_server: MotoServer, bucket: str, aws_isolated: Path
) -> None:
    """Why the conformance test on distinct versions is skipped: S3 ETags hash the content."""
    storage = make(moto_server.url, bucket)
    async with storage:
        first = await storage.put("v", b"same")
        second = await storage.put("v", b"same")
        assert first == second
        assert await storage.get_if_changed("v", first) is None
        assert await storage.put("v", b"other") != first


# --- refreshable credentials under load ---------------------------------------------------

_ROTATION: dict[str, Any] = {"proxy": None, "count": 0, "lifetime": 2.0}
_ROTATION_LOCK = threading.Lock()


def _rotating_credentials() -> S3StaticCredentials:
    """A new key for every call, valid for 2 s (to the whole second, so the proxy's check
    against the second-resolution x-amz-date is exact); the proxy learns each expiry."""
    with _ROTATION_LOCK:
        _ROTATION["count"] += 1
        key = f"ROTATING{_ROTATION['count']:04d}"
    expiry = math.ceil(time.time()) + _ROTATION["lifetime"]
    proxy: RecordingProxy = _ROTATION["proxy"]
    with proxy._lock:
        proxy.key_expiry[key] = expiry
    return S3StaticCredentials(
        key, SECRET, session_token=f"token-{key}", expires_after=datetime.fromtimestamp(expiry, UTC)
    )


async def test_refreshable_credentials_with_2_second_lifetimes_under_load(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    _ROTATION["proxy"] = s3_proxy
    storage = make(
        s3_proxy.url,
        bucket,
        access_key_id=None,
        secret_access_key=None,
        get_credentials=_rotating_credentials,
    )
    failures: list[BaseException] = []
    done = 0
    deadline = time.monotonic() + 10

    async def worker(index: int) -> None:
        nonlocal done
        iteration = 0
        while time.monotonic() < deadline:
            key = f"load/{index}/{iteration % 3}"
            try:
                await storage.put(key, key.encode())  # aiobotocore
                assert bytes((await storage.get(key)).data) == key.encode()  # lean GET
                if iteration % 4 == 0:
                    await storage.head(key)
                done += 1
            except Exception as exc:  # collected: the test fails on any
                failures.append(exc)
            iteration += 1
            await asyncio.sleep(0.1)

    async with storage:
        await asyncio.gather(*(worker(i) for i in range(3)))
    sent = s3_proxy.recorded()
    used = {r.access_key_id for r in sent}
    assert failures == []
    assert s3_proxy.violations == []
    assert done > 40
    assert len(sent) >= 2 * done
    assert len(used) >= 5  # ~10 s of 2 s credentials
    assert None not in used
    assert all(r.headers["x-amz-security-token"] == f"token-{r.access_key_id}" for r in sent)
    calls = refresh_stats(_rotating_credentials).calls
    assert len(used) <= calls <= 20  # refreshed ahead of expiry, not once per request
    print(f"{len(sent)} requests, {done} rounds, {len(used)} keys, {calls} callback calls")


def test_the_proxy_flags_requests_signed_after_expiry() -> None:
    """The load test's server-side check can fail: a key signed at its expiry is flagged."""
    proxy = RecordingProxy("http://127.0.0.1:1")
    proxy.key_expiry = {"K1": datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()}

    def request(key: str, stamp: str) -> RecordedRequest:
        auth = f"AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/s3/aws4_request, x"
        headers = {"authorization": auth, "x-amz-date": stamp}
        return RecordedRequest("GET", "h", "/b/k", "", headers, time.time())

    proxy._check_credentials(request("K1", "20260101T000009Z"))
    assert proxy.violations == []
    proxy._check_credentials(request("K1", "20260101T000010Z"))
    proxy._check_credentials(request("K2", "20260101T000001Z"))
    assert len(proxy.violations) == 2


async def test_a_failing_credentials_callback_is_a_clear_error(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(
        s3_proxy.url,
        bucket,
        access_key_id=None,
        secret_access_key=None,
        get_credentials=_broken_callback,
    )
    async with storage:
        with pytest.raises(CredentialsRefreshError, match="bad creds"):
            await storage.get("k")
        with pytest.raises(CredentialsRefreshError, match="bad creds"):
            await storage.put("k", b"v")
    assert s3_proxy.recorded() == []


def _broken_callback() -> S3StaticCredentials:
    raise RuntimeError("bad creds")


async def test_listing_paginates_with_and_without_delimiter(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket)
    storage._list_page_size = 2
    async with storage:
        keys = ["a/1", "a/2", "a/3", "b/1", "c/1", "d", "e", "f"]
        await asyncio.gather(*(storage.put(k, b"x") for k in keys))
        s3_proxy.clear()
        assert sorted([i.key async for i in storage.list()]) == keys
        top = await storage.list_dir("")
        assert sorted(i.key for i in top.objects) == ["d", "e", "f"]
        assert sorted(top.prefixes) == ["a/", "b/", "c/"]
    pages = s3_proxy.recorded("GET")
    assert len(pages) == 4 + 3  # 8 keys in pages of 2; 6 entries (3 prefixes) in pages of 2
    assert sum("continuation-token" in r.query_params for r in pages) == 3 + 2


async def test_multipart_upload_under_a_request_limit_of_one(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    """Multipart runs each request through the limiter without holding a slot itself, so
    even a limit of one request in flight cannot deadlock it."""
    from icechunk_storage import set_max_concurrent_requests

    previous = get_max_concurrent_requests()
    set_max_concurrent_requests(1)
    try:
        storage = make(
            s3_proxy.url,
            bucket,
            settings=StorageSettings(retries=FAST.retries, minimum_size_for_multipart_upload=10),
        )
        async with storage, asyncio.timeout(30):
            await storage.put("big", b"m" * 100, mode="create")
            assert bytes((await storage.get("big")).data) == b"m" * 100
    finally:
        set_max_concurrent_requests(previous)
    assert len(only(s3_proxy.recorded(), "PUT", "partNumber")) == 1


async def test_a_failed_list_page_is_retried_alone(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket, settings=FAST)
    storage._list_page_size = 2
    async with storage:
        keys = [f"k{i}" for i in range(7)]
        await asyncio.gather(*(storage.put(k, b"x") for k in keys))
        s3_proxy.clear()
        s3_proxy.inject("status", lambda r: "continuation-token" in r.query_params, times=1)
        assert sorted([i.key async for i in storage.list()]) == keys
    pages = s3_proxy.recorded("GET")
    # 4 pages, the second failed once: 5 requests, not a restart from the first page.
    assert len(pages) == 5
    assert sum("continuation-token" not in r.query_params for r in pages) == 1


async def test_errors_carry_the_operation_and_the_users_key(
    s3_proxy: RecordingProxy, bucket: str, aws_isolated: Path
) -> None:
    storage = make(s3_proxy.url, bucket, prefix="deep/prefix")
    async with storage:
        with pytest.raises(ObjectNotFoundError) as raised:
            await storage.get("missing")
        assert raised.value.operation == "get"
        assert raised.value.key == "missing"  # relative to the prefix
        assert "deep/prefix" not in str(raised.value)
        await storage.put("there", b"x")
        with pytest.raises(AlreadyExistsError) as exists:
            await storage.put("there", b"y", mode="create")
        assert (exists.value.operation, exists.value.key) == ("put", "there")
