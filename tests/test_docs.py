"""The development docs as a maintainer reads them: every command exists, every test they name exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

DEVELOPMENT = REPO / "docs" / "development.md"


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))


def shell_lines(page: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_make_command_of_the_development_page_is_a_target() -> None:
    commands = [line for line in shell_lines(DEVELOPMENT) if line.startswith("make ")]
    assert commands and {line.split()[1] for line in commands} <= make_targets()


def test_every_test_the_development_page_names_exists() -> None:
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DEVELOPMENT.read_text())
    assert len(named) == 13  # the promises table
    for file, name in named:
        assert re.search(rf"^def {name}\(", (REPO / file).read_text(), flags=re.MULTILINE), f"{file}::{name}"


def test_the_readme_points_to_the_development_page() -> None:
    assert "docs/development.md" in (REPO / "README.md").read_text()
