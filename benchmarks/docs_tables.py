"""Tables that `make results`, `make bench`, `make bench-serve` and `make mutation` write into the docs themselves.

Each table sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` on its page and opens with one line naming
the command, the date, the commit and the machine it ran on, so a figure in the docs is always the last run of the
command that made it, never typed. `BLOCKS` lists every such table; tests/unit/test_docs.py holds the pages to it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from mnist_dense.atomic import write_atomically

REPO = Path(__file__).resolve().parents[1]
# name -> (page, the command that writes it)
BLOCKS = {
    "fit-output": ("README.md", "make results"),
    "headline": ("README.md", "make results"),
    "results-seeds": ("docs/results.md", "make results"),
    "results-networks": ("docs/results.md", "make results"),
    "not-a-digit": ("docs/results.md", "python -m benchmarks.not_a_digit"),
    "bench": ("docs/speed.md", "make bench"),
    "bench-serve-load": ("docs/serving.md", "python -m benchmarks.serve_load"),
    "bench-serve-hostile": ("docs/serving.md", "python -m benchmarks.serve_load --only hostile"),
    "bench-serve-alone-hostile": ("docs/serving.md", "python -m benchmarks.serve_load --alone --only hostile"),
    "web-page": ("docs/serving.md", "python -m benchmarks.web_page"),
    "mutation-scores": ("docs/development.md", "make mutation"),
    "step-costs": ("docs/speed.md", "python -m benchmarks.step_costs --write_docs step-costs"),
    "step-costs-conv": ("docs/speed.md", "python -m benchmarks.step_costs --write_docs step-costs-conv"),
    "eval-batches-conv": ("docs/speed.md", "python -m benchmarks.step_costs --write_docs eval-batches-conv"),
}
STAMP_START = "Written by `"
CODE = ("mnist_dense", "benchmarks", "configs", "examples", "pyproject.toml")  # what the figures come from


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def stamp(command: str, load: str) -> str:
    """The line that opens a table: the command as run, when, on which commit, on which machine, under which load."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git("rev-parse", "--short", "HEAD") or "no git commit"
    if _git("status", "--porcelain", "--", *CODE):
        commit += " with uncommitted changes"
    return f"{STAMP_START}{command}` on {when}, commit {commit}, on {_machine()} ({load})."


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def write_block(name: str, text: str) -> Path:
    """Put `text` between the block's markers on its page (`write_atomically`: never half a page)."""
    page_name, _ = BLOCKS[name]
    page = REPO / page_name
    start, end = markers(name)
    content = page.read_text()
    if content.count(start) != 1 or content.count(end) != 1:
        raise SystemExit(f"error: {page} needs exactly one {start} and one {end}; put them back where the table goes.")
    before, rest = content.split(start, 1)
    after = rest.split(end, 1)[1]
    write_atomically(page, f"{before}{start}\n{text.strip()}\n{end}{after}")
    return page


def write_stamped(name: str, command: str, load: str, text: str) -> Path:
    """`text` into the block `name`, opened by the stamp of `command`; the page written."""
    return write_block(name, f"{stamp(command, load)}\n\n{text}")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{os.cpu_count()} CPUs ({models[0] if models else platform.processor() or 'an unknown CPU'})"
