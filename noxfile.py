"""Developer and CI entry points. ``nox -s demo`` and ``nox -s check`` are the README's two
commands; ``.ci/run`` calls ``nox -s check``. Environments are built with uv when present."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["check"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session
def demo(session: nox.Session) -> None:
    """Write and read back a few thousand chunks on the local filesystem (no cloud needed)."""
    session.install(".")
    session.run("python", "-m", "icechunk_storage", "demo", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Everything CI runs: ruff, mypy --strict, then the whole test suite."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    _pytest(session)


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
    Needs npm for s3rver, which is installed on first use under bench-results/cache/.
    """
    session.install("-e", ".[bench]")
    session.run(
        "python",
        "-m",
        "benchmarks",
        "--json",
        "docs/benchmark.json",
        "--png",
        "docs/benchmark.png",
        *session.posargs,
    )


def _pytest(session: nox.Session) -> None:
    arguments = session.posargs or ["-q", "-ra", "--durations=15"]
    env = {"PYTHONFAULTHANDLER": "1"}
    if os.environ.get("CI"):
        env["HYPOTHESIS_PROFILE"] = "ci"
    session.run("python", "-m", "pytest", *arguments, env=env)
