"""The ``icechunk-storage`` command on the local filesystem and memory, run as a subprocess:
help and version, ``check``, ``ls``, ``cat``, ``stat``, ``cp``, and its one-line errors.
The same command against the emulators is in ``test_cli_servers.py``."""

from __future__ import annotations

import hashlib
import importlib
import os
import tomllib
from pathlib import Path

import pytest

from tests._cli_helpers import ROOT, assert_one_line_error, clean_env, run_cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c").write_bytes(b"deep")
    (root / "a" / "x").write_bytes(b"hello world")
    (root / "top").write_bytes(b"0123456789")
    return root


def test_console_script_is_the_module_entry_point(env: dict[str, str]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["icechunk-storage"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version", env=env)
    assert result.code == 0
    assert result.out.split() == ["icechunk-storage", version]


def test_help_describes_every_command_and_option(env: dict[str, str]) -> None:
    top = run_cli("--help", env=env)
    assert top.code == 0
    for text in ("check", "ls", "cat", "stat", "cp", "demo", "s3://bucket/prefix", "gs://"):
        assert text in top.out
    assert "az://account/container/prefix" in top.out
    assert "memory://" in top.out
    assert "AWS_ACCESS_KEY_ID" in top.out
    assert "STORAGE_EMULATOR_HOST" in top.out
    cp = run_cli("cp", "--help", env=env)
    for option in ("--if-absent", "--progress", "--json", "--endpoint-url", "--region"):
        assert option in cp.out
    for option in ("--allow-http", "--force-path-style", "--anonymous", "--config"):
        assert option in cp.out
    assert "--rounds" in run_cli("check", "--help", env=env).out
    assert "--range" in run_cli("cat", "--help", env=env).out
    nothing = run_cli(env=env)
    assert nothing.code == 2
    assert "COMMAND" in nothing.err


def test_demo_is_still_a_subcommand(env: dict[str, str], tmp_path: Path) -> None:
    args = ["--path", str(tmp_path / "d"), "--chunks", "3", "--chunk-size", "2"]
    result = run_cli("demo", *args, "--large-mib", "0", "--increments", "2", env=env)
    assert result.code == 0, result.err
    assert "every chunk read back matched" in result.out


@pytest.mark.parametrize("as_url", [False, True])
def test_check_local_passes_and_leaves_nothing(
    env: dict[str, str], tmp_path: Path, as_url: bool
) -> None:
    target = tmp_path / "store"
    target.mkdir()
    (target / "mine").write_bytes(b"not the check's")
    url = f"file://{target}" if as_url else str(target)
    result = run_cli("check", url, "--rounds", "3", "--json", env=env)
    assert result.code == 0, result.err
    report = result.json()
    for name in ("read", "write", "list", "delete", "conditional_create", "conditional_update"):
        assert report[name] is True, (name, report["details"])
    assert report["settings"] == {}
    assert report["cleaned_up"] is True
    assert report["latency_ms"]["put"]["count"] == 3
    assert set(report["latency_ms"]) >= {"put", "get", "head", "list", "delete", "put_create"}
    for row in report["latency_ms"].values():
        assert 0 <= row["p50"] <= row["p90"] <= row["p99"] <= row["max"]
    assert sorted(p.name for p in target.iterdir()) == ["mine"]  # scratch removed completely


def test_check_text_report_and_a_directory_it_created(env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "new"), "--rounds", "2", env=env)
    assert result.code == 0, result.err
    assert "honoured: a second create was refused" in result.out
    assert "StorageSettings()" in result.out
    assert "p99" in result.out
    assert not (tmp_path / "new").exists()


def test_check_memory(env: dict[str, str]) -> None:
    result = run_cli("check", "memory://", "--rounds", "2", "--json", env=env)
    assert result.code == 0, result.err
    report = result.json()
    assert report["conditional_create"] is True
    assert report["conditional_update"] is True


def test_ls_one_level_recursive_long_and_json(env: dict[str, str], tree: Path) -> None:
    assert run_cli("ls", str(tree), env=env).out.splitlines() == ["a/", "top"]
    assert run_cli("ls", "-r", str(tree), env=env).out.splitlines() == ["a/b/c", "a/x", "top"]
    long = run_cli("ls", "-l", "-r", f"file://{tree}/a", env=env).out.splitlines()
    assert len(long) == 2
    assert long[1].split()[0] == "11"
    assert "x" in long[1].split()
    listed = run_cli("ls", "--json", str(tree), env=env).json()
    assert listed[0] == {"prefix": "a/"}
    assert listed[1]["key"] == "top"
    assert listed[1]["size"] == 10
    assert listed[1]["etag"]
    one = run_cli("ls", str(tree / "top"), env=env)
    assert one.out.splitlines() == ["top"]


def test_cat_whole_ranges_and_json(env: dict[str, str], tree: Path) -> None:
    top = str(tree / "top")
    assert run_cli("cat", top, env=env).raw == b"0123456789"
    assert run_cli("cat", top, "--range", "2-4", env=env).raw == b"234"
    assert run_cli("cat", top, "--range", "7-", env=env).raw == b"789"
    assert run_cli("cat", top, "--range", "-2", env=env).raw == b"89"
    data = run_cli("cat", top, "--json", env=env).json()
    assert data["size"] == 10
    assert data["data_base64"] == "MDEyMzQ1Njc4OQ=="
    assert_one_line_error(run_cli("cat", top, "--range", "4-2", env=env), "--range", code=2)
    assert_one_line_error(run_cli("cat", top, "--range", "20-", env=env), "top")


def test_cat_of_an_object_larger_than_one_part(env: dict[str, str], tmp_path: Path) -> None:
    blob = os.urandom(16 * 1024 * 1024 + 5)
    (tmp_path / "big").write_bytes(blob)
    assert run_cli("cat", str(tmp_path / "big"), env=env).raw == blob


def test_stat(env: dict[str, str], tree: Path) -> None:
    info = run_cli("stat", "--json", str(tree / "a" / "x"), env=env).json()
    assert info["key"] == "x"
    assert info["size"] == 11
    assert info["last_modified"]
    text = run_cli("stat", str(tree / "a" / "x"), env=env).out
    assert "size           11" in text


def test_cp_prefix_object_and_if_absent(env: dict[str, str], tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    result = run_cli("cp", str(tree), str(dst), "--json", env=env)
    assert result.code == 0, result.err
    assert result.json()["copied"] == 3
    assert result.json()["bytes"] == 25
    assert (dst / "a" / "b" / "c").read_bytes() == b"deep"
    assert sorted(p.name for p in dst.iterdir()) == ["a", "top"]  # no temporary leftovers
    assert result.err == ""  # piped: no progress bar

    # One object into an existing directory keeps its name; to a new path takes that name.
    assert run_cli("cp", str(tree / "top"), str(dst / "a"), env=env).code == 0
    assert (dst / "a" / "top").read_bytes() == b"0123456789"
    assert run_cli("cp", str(tree / "top"), str(dst / "renamed"), env=env).code == 0
    assert (dst / "renamed").read_bytes() == b"0123456789"

    # --if-absent: conditional create keeps what is there, and says so.
    (tree / "top").write_bytes(b"changed")
    (tree / "new").write_bytes(b"new")
    again = run_cli("cp", "--if-absent", str(tree), str(dst), "--json", env=env).json()
    assert (again["copied"], again["skipped"]) == (1, 3)
    assert (dst / "top").read_bytes() == b"0123456789"
    assert (dst / "new").read_bytes() == b"new"
    text = run_cli("cp", "--if-absent", str(tree), str(dst), env=env).out
    assert "4 skipped: already at the destination (--if-absent)" in text


def test_cp_large_object_is_read_back_with_bounded_batches(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blobs = {f"o{i}": os.urandom(size) for i, size in enumerate([9 * 2**20, 1, 2**20, 0])}
    for name, blob in blobs.items():
        (src / name).write_bytes(blob)
    args = ["cp", str(src), "memory://m", "--buffer-mib", "2", "--json"]
    report = run_cli(*args, env=env).json()
    assert report["copied"] == 4
    assert report["read_back"] == 1
    back = run_cli("cp", str(src), str(tmp_path / "dst"), "--json", env=env).json()
    assert back["bytes"] == sum(len(b) for b in blobs.values())
    for name, blob in blobs.items():
        digest = hashlib.sha256((tmp_path / "dst" / name).read_bytes()).digest()
        assert digest == hashlib.sha256(blob).digest()


def test_cp_progress_bar_only_when_asked_or_on_a_terminal(
    env: dict[str, str], tree: Path, tmp_path: Path
) -> None:
    shown = run_cli("cp", "--progress", str(tree), str(tmp_path / "p"), env=env)
    assert shown.code == 0
    assert "3/3 objects" in shown.err
    hidden = run_cli("cp", str(tree), str(tmp_path / "q"), env=env)
    assert hidden.code == 0
    assert hidden.err == ""


@pytest.mark.parametrize(
    ("args", "needles", "code"),
    [
        (["ls", "ftp://host/x"], ["unknown URL scheme 'ftp://'", "s3://bucket/prefix"], 2),
        (["ls", "s3://"], ["names no bucket"], 2),
        (["ls", "az://account"], ["names no container"], 2),
        (["ls", "file://host/x"], ["not a host"], 2),
        (["ls", "/tmp", "--region", "eu-west-1"], ["--region applies to s3 URLs only"], 2),
        (["ls", "gs://b/p", "--region", "eu-west-1"], ["--region applies to s3 URLs only"], 2),
        (["ls", "s3://b/p", "--config", "nonsense"], ["expected KEY=VALUE"], 2),
        (["ls", "s3://b/p", "--config", "colour=blue"], ["does not apply to s3"], 2),
        (["cat", "memory://nothing/here"], ["No object"], 1),
        (["stat", "/nonexistent-dir/x"], ["x"], 1),
        (["ls", "/nonexistent-dir/x"], ["no object and nothing under it"], 1),
        (["cp", "/nonexistent-dir/x", "memory://"], ["no object, and nothing under it"], 1),
        (["cat", "memory://a/"], ["names a prefix, not an object"], 2),
    ],
)
def test_errors_are_one_line(
    env: dict[str, str], args: list[str], needles: list[str], code: int
) -> None:
    assert_one_line_error(run_cli(*args, env=env), *needles, code=code)
