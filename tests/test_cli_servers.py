"""The ``icechunk-storage`` command against the emulators, run as a subprocess: moto (S3),
fake-gcs-server (GCS), Azurite (Azure), and S3 stores that ignore or reject conditional writes.

moto enforces ``If-None-Match``/``If-Match``; the stores that do not are moto behind
:class:`ConditionsProxy`, which either strips those headers from writes (a store that ignores
them: the write overwrites) or answers 501 NotImplemented to a write carrying them (a store
that rejects them). Its recordings show the client did send the headers, so a "not honoured"
verdict is the store's doing, not ours. Each test makes a few dozen requests at most.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests._azurite import AZURITE_ACCOUNT, AzuriteServer
from tests._cli_helpers import assert_one_line_error, clean_env, run_cli
from tests._gcs_server import FakeGcsServer
from tests._s3_proxy import RecordingProxy, _error_body
from tests._s3_server import MOTO_KEY, MOTO_REGION, MotoServer

CONDITIONS = ("if-none-match", "if-match")
CHECKS = ("read", "write", "list", "delete", "conditional_create", "conditional_update")


class ConditionsProxy(RecordingProxy):
    """moto as a store without conditional writes: ``mode`` "ignore" strips the condition
    headers from writes, "reject" refuses such writes with 501 NotImplemented."""

    mode = "ignore"

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        names = {name.lower() for name in request.headers}
        if request.method in ("PUT", "POST") and names & set(CONDITIONS):
            if self.mode == "reject":
                with self._lock:
                    self.requests.append(
                        _rejected(request.method, request.raw_path, request.headers)
                    )
                return web.Response(
                    status=501,
                    body=_error_body("NotImplemented", "conditional writes are not supported"),
                    content_type="application/xml",
                )
            headers = CIMultiDict(
                (k, v) for k, v in request.headers.items() if k.lower() not in CONDITIONS
            )
            with self._lock:
                self.stripped.extend(sorted(names & set(CONDITIONS)))
            request = request.clone(headers=headers)
        return await super()._handle(request)

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.stripped: list[str] = []


def _rejected(method: str, path: str, headers: Any) -> Any:
    from tests._s3_proxy import RecordedRequest

    return RecordedRequest(
        method=method,
        host="",
        path=path.partition("?")[0],
        query=path.partition("?")[2],
        headers={k.lower(): v for k, v in headers.items()},
        received_at=0.0,
        status=501,
    )


@pytest.fixture
def conditions_proxy(moto_server: MotoServer) -> Iterator[ConditionsProxy]:
    proxy = ConditionsProxy(moto_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def s3_env(tmp: Path) -> dict[str, str]:
    return clean_env(
        tmp, AWS_ACCESS_KEY_ID=MOTO_KEY, AWS_SECRET_ACCESS_KEY=MOTO_KEY, AWS_REGION=MOTO_REGION
    )


def s3_options(endpoint: str) -> list[str]:
    return ["--endpoint-url", endpoint, "--allow-http", "--force-path-style"]


def _keys(s3_admin: Any, bucket: str) -> list[str]:
    listed = s3_admin.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def test_check_moto_honours_everything_and_cleans_up(
    moto_server: MotoServer, s3_admin: Any, bucket: str, tmp_path: Path
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="data/keep", Body=b"mine")
    args = ["check", f"s3://{bucket}/data", "--rounds", "2", "--json"]
    result = run_cli(*args, *s3_options(moto_server.url), env=s3_env(tmp_path))
    assert result.code == 0, result.err
    report = result.json()
    assert all(report[name] is True for name in CHECKS), report["details"]
    assert report["settings"] == {}
    assert report["latency_ms"]["put"]["count"] == 2
    assert _keys(s3_admin, bucket) == ["data/keep"]  # the scratch prefix is gone


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_check_a_store_without_conditional_writes(
    conditions_proxy: ConditionsProxy, s3_admin: Any, bucket: str, tmp_path: Path, mode: str
) -> None:
    conditions_proxy.mode = mode
    args = ["check", f"s3://{bucket}/p", "--rounds", "2", "--json"]
    result = run_cli(*args, *s3_options(conditions_proxy.url), env=s3_env(tmp_path))
    assert result.code == 1, result.err  # a check that did not pass
    report = result.json()
    assert all(report[name] is True for name in CHECKS[:4]), report["details"]
    assert report["conditional_create"] is False
    assert report["conditional_update"] is False
    verdict = "IGNORED" if mode == "ignore" else "rejected"
    assert report["details"]["conditional_create"].startswith(verdict)
    assert report["details"]["conditional_update"].startswith(verdict)
    assert report["settings"] == {
        "unsafe_use_conditional_create": False,
        "unsafe_use_conditional_update": False,
    }
    assert report["cleaned_up"] is True
    assert _keys(s3_admin, bucket) == []
    # The client did send both conditions: the verdict is the store's doing.
    if mode == "ignore":
        assert set(conditions_proxy.stripped) == set(CONDITIONS)
    else:
        sent = {h for r in conditions_proxy.recorded() for h in r.headers if h in CONDITIONS}
        assert sent == set(CONDITIONS)
    text = run_cli(*args[:-1], *s3_options(conditions_proxy.url), env=s3_env(tmp_path)).out
    assert (
        "StorageSettings(unsafe_use_conditional_create=False, "
        "unsafe_use_conditional_update=False)" in text
    )


def test_ls_cat_stat_and_cp_on_s3(
    moto_server: MotoServer, s3_admin: Any, bucket: str, tmp_path: Path
) -> None:
    for key, body in {"src/a/1": b"one", "src/a/2": b"two!", "src/b": b"0123456789"}.items():
        s3_admin.put_object(Bucket=bucket, Key=key, Body=body)
    env, options = s3_env(tmp_path), s3_options(moto_server.url)
    assert run_cli("ls", f"s3://{bucket}/src", *options, env=env).out.split() == ["a/", "b"]
    listed = run_cli("ls", "-r", "--json", f"s3://{bucket}/src", *options, env=env).json()
    assert [(o["key"], o["size"]) for o in listed] == [("a/1", 3), ("a/2", 4), ("b", 10)]
    ranged = run_cli("cat", "--range", "2-5", f"s3://{bucket}/src/b", *options, env=env)
    assert ranged.raw == b"2345"
    info = run_cli("stat", "--json", f"s3://{bucket}/src/b", *options, env=env).json()
    assert info["size"] == 10
    assert info["etag"] == s3_admin.head_object(Bucket=bucket, Key="src/b")["ETag"]

    copied = run_cli("cp", f"s3://{bucket}/src", f"s3://{bucket}/dst/", *options, "--json", env=env)
    assert copied.code == 0, copied.err
    assert (copied.json()["copied"], copied.json()["etag_verified"]) == (3, 3)
    assert _keys(s3_admin, bucket)[:3] == ["dst/a/1", "dst/a/2", "dst/b"]

    local = tmp_path / "local"
    (local / "a").mkdir(parents=True)
    (local / "a" / "1").write_bytes(b"local one")
    (local / "new").write_bytes(b"new")
    again = run_cli(
        "cp", "--if-absent", str(local), f"s3://{bucket}/dst", *options, "--json", env=env
    ).json()
    assert (again["copied"], again["skipped"]) == (1, 1)
    assert s3_admin.get_object(Bucket=bucket, Key="dst/a/1")["Body"].read() == b"one"


def test_check_gcs(gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path, STORAGE_EMULATOR_HOST=gcs_server.url)
    result = run_cli("check", f"gs://{gcs_bucket}/p", "--rounds", "2", "--json", env=env)
    assert result.code == 0, result.err
    report = result.json()
    assert all(report[name] is True for name in CHECKS), report["details"]
    assert run_cli("ls", "-r", f"gs://{gcs_bucket}", env=env).out == ""


def test_check_azure(
    azurite: AzuriteServer, azure_admin: Any, container: str, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    url = f"az://{AZURITE_ACCOUNT}/{container}/p"
    options = ["--endpoint-url", azurite.blob_endpoint, "--allow-http"]
    result = run_cli("check", url, "--rounds", "2", "--json", *options, env=env)
    assert result.code == 0, result.err
    report = result.json()
    assert all(report[name] is True for name in CHECKS), report["details"]
    assert list(azure_admin.get_container_client(container).list_blobs()) == []


def test_cp_through_s3_gcs_and_azure(
    moto_server: MotoServer,
    bucket: str,
    gcs_server: FakeGcsServer,
    gcs_bucket: str,
    azurite: AzuriteServer,
    container: str,
    tmp_path: Path,
) -> None:
    """local -> S3 -> GCS -> Azure -> local, each endpoint named in its own URL."""
    source = tmp_path / "source"
    (source / "c").mkdir(parents=True)
    files = {"zarr.json": b"{}", "c/0": bytes(range(256)) * 40, "c/1": b""}
    for name, body in files.items():
        (source / name).write_bytes(body)
    env = clean_env(
        tmp_path,
        AWS_ACCESS_KEY_ID=MOTO_KEY,
        AWS_SECRET_ACCESS_KEY=MOTO_KEY,
        AWS_REGION=MOTO_REGION,
        STORAGE_EMULATOR_HOST=gcs_server.url,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    s3 = f"s3://{bucket}/arr?endpoint_url={moto_server.url}&allow_http=true&force_path_style=1"
    az = f"az://{AZURITE_ACCOUNT}/{container}/arr?endpoint={azurite.blob_endpoint}"
    az += "&allow_http=true"
    hops = [str(source), s3, f"gs://{gcs_bucket}/arr", az, str(tmp_path / "back")]
    for src, dst in itertools.pairwise(hops):
        result = run_cli("cp", src, dst, "--json", env=env)
        assert result.code == 0, (src, dst, result.err)
        assert result.json()["copied"] == 3
    for name, body in files.items():
        assert (tmp_path / "back" / name).read_bytes() == body


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_clear_errors_for_bucket_credentials_and_connection(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    options = s3_options(moto_server.url)
    missing = run_cli("ls", "s3://no-such-bucket-here/x/", *options, env=s3_env(tmp_path))
    assert_one_line_error(missing, "'no-such-bucket-here' does not exist", code=2)

    no_credentials = clean_env(tmp_path, AWS_REGION=MOTO_REGION)
    anonymous = run_cli("ls", "s3://b/x/", *options, env=no_credentials)
    assert_one_line_error(anonymous, "No AWS credentials were found")

    dead = f"http://127.0.0.1:{_closed_port()}"
    refused = run_cli(
        "ls", "s3://b/x/", *s3_options(dead), "--max-tries", "2", env=s3_env(tmp_path)
    )
    assert_one_line_error(refused, "2 attempts")
