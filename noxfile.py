"""Developer and CI entry points. ``nox -s demo`` and ``nox -s check`` are the README's two
commands (through ``.ci/nox``, which installs nox first); ``.ci/run`` calls ``.ci/nox -s check``.
Environments are built with uv when present."""

from __future__ import annotations

import glob
import os
import subprocess

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["check"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


def _python_312() -> str:
    """A working Python 3.12 for the newest zarr (zarr >= 3.2 needs it): pyenv's if present
    (uv does not look there, and a pyenv shim of a version that is not selected fails), else
    whatever ``python3.12`` uv or virtualenv find."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in reversed(candidates):
        if subprocess.run([candidate, "-c", ""], check=False).returncode == 0:
            return candidate
    return "3.12"


@nox.session
def demo(session: nox.Session) -> None:
    """Write and read back a few thousand chunks on the local filesystem (no cloud needed)."""
    session.install(".")
    session.run("python", "-m", "icechunk_storage", "demo", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Everything CI runs: ruff, mypy --strict, the whole test suite on this Python (3.11+),
    then ``tests_newest_zarr`` (Python 3.12, the newest zarr)."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    _pytest(session)
    session.notify("tests_newest_zarr")


@nox.session(python=_python_312())
def tests_newest_zarr(session: nox.Session) -> None:
    """The test suite on Python 3.12 with the newest zarr (its ``get_ranges`` and sync store
    protocols), without the multi-process ``slow`` tests that the 3.11 run already covers."""
    session.install("-e", ".[test]", "zarr>=3.3")
    _pytest(session, default=["-q", "-ra", "--durations=10", "-m", "not slow"])


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite only; pass pytest arguments after ``--``."""
    session.install("-e", ".[test]")
    _pytest(session)


@nox.session(python=PYTHONS)
def tests_all_pythons(session: nox.Session) -> None:
    """The test suite on every supported Python found on this machine."""
    session.install("-e", ".[test]")
    _pytest(session)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark against the peers; flags after ``--`` (see docs/benchmarks.md).

    Writes the table to stdout, and docs/benchmark.json and docs/benchmark.png for the README.
    Needs npm for s3rver, which is installed on first use under bench-results/cache/. Then the
    repository at scale (``benchmarks.repo_scale``): ``--repo-keys 10000,100000,1000000``
    chooses its sizes (default 10,000 and 100,000; 1,000,000 is the issue's target size and
    takes several minutes to build); ``--repo-keys 0`` skips it.
    """
    session.install("-e", ".[bench]")
    arguments = list(session.posargs)
    repo_keys = "10000,100000"
    if "--repo-keys" in arguments:
        index = arguments.index("--repo-keys")
        repo_keys = arguments[index + 1]
        del arguments[index : index + 2]
    session.run(
        "python",
        "-m",
        "benchmarks",
        "--json",
        "docs/benchmark.json",
        "--png",
        "docs/benchmark.png",
        *arguments,
    )
    if repo_keys != "0":
        session.run("python", "-m", "benchmarks.repo_scale", "--keys", repo_keys)


def _pytest(session: nox.Session, default: list[str] | None = None) -> None:
    arguments = session.posargs or default or ["-q", "-ra", "--durations=15"]
    env = {"PYTHONFAULTHANDLER": "1"}
    if os.environ.get("CI"):
        env["HYPOTHESIS_PROFILE"] = "ci"
    session.run("python", "-m", "pytest", *arguments, env=env)
