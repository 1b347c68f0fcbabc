"""Every test under tests/e2e is slow by its folder: it starts processes (the CLI, servers, nginx, PostgreSQL, a
browser, DDP) or sends signals. `make test` runs them too; `make test-quick` runs tests/unit alone."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)
