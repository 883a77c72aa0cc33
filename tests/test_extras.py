"""A missing extra is refused when the storage is built, naming the pip install to run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from icechunk_storage import MissingDependencyError, gcs_storage, s3_storage


@pytest.mark.parametrize("module", ["aiobotocore", "aiohttp", "yarl"])
def test_s3_storage_without_the_s3_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'icechunk-storage\[s3\]'"):
        s3_storage(bucket="b", prefix="p", region="us-east-1", anonymous=True)
    with pytest.raises(ImportError, match=module):
        s3_storage(bucket="b", prefix="p", region="us-east-1", anonymous=True)


def test_s3_storage_with_the_extra_builds() -> None:
    s3_storage(bucket="b", prefix="p", region="us-east-1", anonymous=True)


def test_zarr_adapter_without_the_zarr_extra() -> None:
    code = (
        "import sys; sys.modules['zarr'] = None\n"
        "try:\n"
        "    import icechunk_storage.zarr\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'icechunk-storage[zarr]'" in out


@pytest.mark.parametrize("module", ["gcloud.aio.auth", "aiohttp"])
def test_gcs_storage_without_the_gcs_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'icechunk-storage\[gcs\]'"):
        gcs_storage(bucket="b", prefix="p", anonymous=True)
    with pytest.raises(ImportError, match=module):
        gcs_storage(bucket="b", prefix="p", anonymous=True)


def test_gcs_storage_with_the_extra_builds() -> None:
    gcs_storage(bucket="b", prefix="p", anonymous=True)
