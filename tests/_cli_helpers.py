"""Run the real ``icechunk-storage`` command in a subprocess, in a clean environment.

``python -m icechunk_storage`` with this checkout first on ``PYTHONPATH`` is exactly what the
console script runs (``icechunk_storage._cli:main``, checked against pyproject.toml). The
environment keeps no AWS, Google or Azure settings or proxies of the machine: a test adds the
credentials it means to give.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent

_DROP = ("AWS_", "GOOGLE_", "GCE_", "CLOUDSDK_", "AZURE_", "AZURITE_", "STORAGE_EMULATOR_HOST")
_PROXIES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_DROP) and name.lower() not in _PROXIES
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["CLOUDSDK_CONFIG"] = str(tmp / "no-gcloud-config")
    env["GCE_METADATA_HOST"] = "127.0.0.1:9"  # the discard port: never answers
    env.update(extra)
    return env


@attrs.frozen
class Result:
    code: int
    out: str
    err: str
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str, env: dict[str, str], stdin: bytes | None = None) -> Result:
    completed = subprocess.run(
        [sys.executable, "-m", "icechunk_storage", *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Result(
        completed.returncode,
        completed.stdout.decode(errors="replace"),
        completed.stderr.decode(errors="replace"),
        completed.stdout,
    )


def assert_one_line_error(result: Result, *needles: str, code: int = 1) -> None:
    """A clear failure: the exit code, one line on stderr naming the problem, no traceback."""
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("icechunk-storage: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
