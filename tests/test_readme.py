"""The Python examples in the README and in docs/ run as written.

Blocks fenced as ``python`` run here; blocks fenced as ``py`` need a cloud account and are only
parsed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (f"{page.name}:{index}", code)
    for page in PAGES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL))
]


CLOUD_BLOCKS = [
    code for page in PAGES for code in re.findall(r"```py\n(.*?)```", page.read_text(), re.DOTALL)
]


@pytest.mark.parametrize("code", CLOUD_BLOCKS)
def test_cloud_examples_at_least_parse(code: str) -> None:
    compile(code, "<readme>", "exec")


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
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
    commands = re.findall(r"^\.ci/nox -s (\w+)$", README.read_text(), flags=re.MULTILINE)
    assert commands == ["demo", "check"]
    assert '/nox" -s check' in (README.parent / ".ci" / "run").read_text()


def test_readme_lists_every_extra() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    listed = re.findall(r"^\| `(\w+)` \|", README.read_text(), flags=re.MULTILINE)
    assert set(listed) == set(extras) - {"test", "lint", "bench", "mutate"}  # developer extras
