"""No warning at exit for a storage used through zarr's sync API without ``aclose()``.

zarr's atexit handler stops and closes its ``zarr_io`` loop without letting it finalize async
generators, which is how our clients close themselves; ``_loops.shut_down_at_exit`` does that
first. Each case runs in a fresh interpreter, whose stderr must be empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._s3_server import MOTO_KEY, MOTO_REGION, MotoServer

ROOT = Path(__file__).parent.parent

SCRIPT = f"""
import sys
import numpy as np
import zarr
import icechunk_storage
from icechunk_storage.zarr import ZarrStore

kind, where, mode = sys.argv[1:4]
if kind == "s3":
    url, bucket = where.split("|")
    storage = icechunk_storage.s3_storage(
        bucket=bucket, prefix="exit", endpoint_url=url, allow_http=True, force_path_style=True,
        region={MOTO_REGION!r}, access_key_id={MOTO_KEY!r}, secret_access_key={MOTO_KEY!r},
    )
elif kind == "local":
    storage = icechunk_storage.local_filesystem_storage(where)
else:
    storage = icechunk_storage.in_memory_storage()
store = ZarrStore(storage)
if mode in ("write", "both"):
    array = zarr.create_array(store, name="a", shape=(10,), chunks=(5,), dtype="i4")
    array[:] = np.arange(10)
if mode in ("read", "both"):
    assert zarr.open_array(store, path="a", mode="r")[3] == 3
    assert sorted(zarr.open_group(store, mode="r").array_keys()) == ["a"]
print("done")
"""


def _run(*arguments: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONWARNINGS"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's package, whatever is installed
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_no_warning_at_exit_without_aclose(kind: str, tmp_path: Path) -> None:
    result = _run(kind, str(tmp_path), "both")
    assert result.stdout.strip() == "done", result.stderr
    assert result.stderr == ""


@pytest.mark.s3
def test_no_warning_at_exit_without_aclose_s3(moto_server: MotoServer, bucket: str) -> None:
    where = f"{moto_server.url}|{bucket}"
    for mode in ("write", "read"):  # the read in a process that never wrote
        result = _run("s3", where, mode)
        assert result.stdout.strip() == "done", result.stderr
        assert result.stderr == "", f"{mode}: {result.stderr}"
