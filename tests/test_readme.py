"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_readme_has_exactly_the_two_setup_commands() -> None:
    commands = re.findall(
        r"^python3 -m pip install nox uv && python3 -m nox -s (\w+)$",
        README.read_text(),
        flags=re.MULTILINE,
    )
    assert commands == ["demo", "check"]
    assert "nox -s check" in (README.parent / ".ci" / "run").read_text()
