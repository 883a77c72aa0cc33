"""The demo runs at small and odd sizes, counts what it says, and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from icechunk_storage._demo import main, run_demo

SMALL = ["--large-mib", "1", "--increments", "5"]


@pytest.mark.parametrize(("chunks", "chunk_size"), [(1, 1), (7, 3), (3, 1023), (501, 5)])
def test_demo_at_small_and_odd_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chunks: int, chunk_size: int
) -> None:
    path = tmp_path / "data"
    argv = ["--path", str(path), "--chunks", str(chunks), "--chunk-size", str(chunk_size)]
    assert main([*argv, *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"write {chunks} chunks of {chunk_size} B" in out
    assert "every chunk read back matched" in out
    assert not path.exists()  # without --keep, what the demo wrote is gone


async def test_counts_add_up_as_explained(tmp_path: Path) -> None:
    storage = await run_demo(str(tmp_path), 600, 10, progress=False, large_mib=1, increments=5)
    stats = storage.stats
    lost = stats["put"].errors  # every failed put is a lost compare-and-swap race
    assert stats["put"].calls == 600 + 1 + 1 + 5 + lost
    # A lost race is refused on its only send: no read-back head follows it.
    assert stats["put"].requests == stats["put"].calls
    assert stats["get"].calls == 5 + lost + 1 + 1
    assert stats["get"].requests == 5 + lost + 1 + 16  # the large read is 16 parts
    assert stats["get_many"].calls == 2 + 1  # 2 batches of up to 500, then the ranges
    assert stats["list"].calls == 1


def test_keep_with_path_keeps_the_data(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not the demo's")
    main(["--path", str(tmp_path), "--chunks", "3", "--chunk-size", "2", "--keep", *SMALL])
    assert (tmp_path / "array" / "c" / "2").stat().st_size == 2
    main(["--path", str(tmp_path), "--chunks", "3", "--chunk-size", "2", *SMALL])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # only ours is deleted


def test_bad_sizes_are_refused_and_help_shows_defaults() -> None:
    with pytest.raises(SystemExit):
        main(["--chunk-size", "0"])
    result = subprocess.run(
        [sys.executable, "-m", "icechunk_storage", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "bytes per chunk (default: 16384)" in " ".join(result.stdout.split())
