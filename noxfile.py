"""Developer and CI entry points. ``nox -s demo`` and ``nox -s check`` are the README's two
commands (through ``.ci/nox``, which installs nox first); ``.ci/run`` calls ``.ci/nox -s check``.
Environments are built with uv when present."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

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


MUTATION_TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (module, its own tests): fast, server-free tests only.
    "_keys": (
        "icechunk_storage/_keys.py",
        ("tests/test_core_keys.py", "tests/test_keys_fuzz.py", "tests/test_foundation.py"),
    ),
    "_fetch": (
        "icechunk_storage/_fetch.py",
        ("tests/test_core_fetch.py", "tests/test_foundation.py"),
    ),
    "_retry": (
        "icechunk_storage/_retry.py",
        ("tests/test_core_retry.py", "tests/test_foundation.py"),
    ),
    "_ranges": (
        "icechunk_storage/_ranges.py",
        ("tests/test_core_ranges.py", "tests/test_foundation.py", "tests/test_properties.py"),
    ),
    "_sigv4": (
        "icechunk_storage/_s3/_sigv4.py",
        (
            "tests/test_core_sigv4.py",
            "tests/test_s3.py::test_signer_canonicalization_matches_botocore",
            "tests/test_s3.py::test_lean_get_matches_botocore_byte_for_byte",
        ),
    ),
    "_refresher": (
        "icechunk_storage/_refresher.py",
        ("tests/test_core_refresher.py", "tests/test_refresher.py"),
    ),
    "_integrity": (
        "icechunk_storage/_transport/_integrity.py",
        ("tests/test_core_integrity.py",),
    ),
    "_proxy": (
        "icechunk_storage/_transport/_proxy.py",
        (
            "tests/test_core_proxy.py",
            "tests/test_transport_hostile.py::test_no_proxy_matches_ipv6_literals_domains_and_cidr",
        ),
    ),
}
"""What ``nox -s mutate`` mutates, each module against its own tests only."""

MUTATION_EQUIVALENTS = Path("mutation-equivalents.md")
_MUTANT_NAME = re.compile(r"icechunk_storage\.[\w.]+__mutmut_\d+")
_DETECTED = {1, 3, 24, -24, 36, 152, 255}  # mutmut's exit codes for killed and timed out


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of the shared core with mutmut (see ``MUTATION_TARGETS``).

    ``nox -s mutate -- _keys`` runs one module. Each module runs in its own copy under
    ``.mutate/<name>/`` (mutmut's ``mutants/`` lives there) with ``--max-children 1``.
    A module passes at 90% of its mutants killed or listed as equivalent, with the reason,
    in mutation-equivalents.md. Run it niced: ``nice -n 15 nox -s mutate -- _keys``, or in an
    existing environment that has mutmut: ``nice -n 15 nox --no-venv --no-install -s mutate``.
    """
    session.install("-e", ".[test,mutate]")
    names = session.posargs or list(MUTATION_TARGETS)
    unknown = sorted(set(names) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"Unknown module(s) {unknown}; choose from {sorted(MUTATION_TARGETS)}.")
    equivalents = _listed_equivalents(MUTATION_EQUIVALENTS.read_text())
    failed = []
    for name in names:
        module, tests = MUTATION_TARGETS[name]
        workdir = _mutation_workdir(name, module, tests)
        with session.chdir(workdir):
            session.run("mutmut", "run", "--max-children", "1", external=True)
        score = _mutation_score(session, workdir / "mutants" / f"{module}.meta", equivalents)
        if score < 0.9:
            failed.append(f"{name} ({score:.0%})")
    if failed:
        session.error(f"Below 90% killed or equivalent: {', '.join(failed)}.")


def _listed_equivalents(text: str) -> set[str]:
    """Mutant names in the "## Equivalent mutants" section (not the untested survivors)."""
    section = text.partition("\n## Equivalent mutants\n")[2].partition("\n## ")[0]
    return set(_MUTANT_NAME.findall(section))


def _mutation_workdir(name: str, module: str, tests: tuple[str, ...]) -> Path:
    """A fresh copy of the package and tests whose [tool.mutmut] mutates ``module`` only."""
    workdir = Path(".mutate") / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", ".hypothesis")
    for directory in ("icechunk_storage", "tests"):
        shutil.copytree(directory, workdir / directory, ignore=skip)
    pyproject = Path("pyproject.toml").read_text()
    header = "[tool.mutmut]\n"
    if pyproject.count(header) != 1:
        raise RuntimeError("pyproject.toml needs exactly one [tool.mutmut] table.")
    selection = (
        f"only_mutate = {json.dumps([module])}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}\n"
    )
    (workdir / "pyproject.toml").write_text(pyproject.replace(header, header + selection))
    return workdir


def _mutation_score(session: nox.Session, meta: Path, equivalents: set[str]) -> float:
    """Log and return (killed + listed equivalents) / mutants for one module's results."""
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    killed = {name for name, code in exit_codes.items() if code in _DETECTED}
    survivors = set(exit_codes) - killed
    equivalent = survivors & equivalents
    stale = {name for name in equivalents & set(exit_codes) if name in killed}
    session.log(
        f"{meta.name[: -len('.meta')]}: {len(killed)} of {len(exit_codes)} killed, "
        f"{len(equivalent)} listed as equivalent, "
        f"score {(len(killed) + len(equivalent)) / max(len(exit_codes), 1):.1%}"
    )
    for name in sorted(survivors - equivalent):
        session.log(f"  survived: {name} (mutmut show {name})")
    for name in sorted(stale):
        session.warn(f"  listed as equivalent but killed: {name}")
    return (len(killed) + len(equivalent)) / max(len(exit_codes), 1)


def _pytest(session: nox.Session, default: list[str] | None = None) -> None:
    arguments = session.posargs or default or ["-q", "-ra", "--durations=15"]
    env = {"PYTHONFAULTHANDLER": "1"}
    if os.environ.get("CI"):
        env["HYPOTHESIS_PROFILE"] = "ci"
    session.run("python", "-m", "pytest", *arguments, env=env)
