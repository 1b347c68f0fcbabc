"""The docs as a newcomer uses them: every command works as written, every link leads somewhere, every figure was
written by the command that measures it, and the pages speak of the software, not of how it was made."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from benchmarks import docs_tables, serve_load
from mnist_dense import calibration, shift, show
from mnist_dense.commands import main
from mnist_dense.deploy import export, serve
from mnist_dense.sweep import command as sweep
from tests.conftest import REPO

README = REPO / "README.md"
DEVELOPMENT = REPO / "docs" / "development.md"
PAGES = [README, REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
USER_PAGES = [page for page in PAGES if page.name != "CHANGELOG.md"]
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def shell_commands(page: Path) -> list[str]:
    """The commands of the page's bash blocks as a shell reads them (continuations joined, comments dropped), and
    the `$ ` lines of its text blocks."""
    commands = []
    for block in code_blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip().removesuffix("&").strip()
            if line:
                commands.append(line)
    for block in code_blocks(page, "text"):  # a command shown with its output
        commands += [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    return commands


def package_commands() -> list[tuple[str, list[str]]]:
    """Every `python -m mnist_dense...` of the docs (also under torchrun, srun or an environment variable), as
    (page, the module and its arguments), with shell variables given a value."""
    found = []
    for page in PAGES:
        for command in shell_commands(page):
            words = shlex.split(re.sub(r"\$\w+", "0", command))
            for at, word in enumerate(words[:-1]):
                if word == "-m" and words[at + 1].startswith("mnist_dense"):
                    found.append((page.name, words[at + 1 :]))
    return found


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))


def parse_only(words: list[str]) -> None:
    """Parse a command line as the command would, and run nothing: Trainer commands through LightningCLI's
    `--print_config`, the others through their own parsers (a sweep's `fit` flags through `fit` too)."""
    module, *args = words
    if module == "mnist_dense.show":
        show.parse_args(args)
    elif module == "mnist_dense.shift":
        shift.parse_args(args)
    elif args[0] == "export":
        export.parse_args(args[1:])
    elif args[0] == "serve":
        serve.parse_args(args[1:])
    elif args[0] == "calibrate":
        calibration.parse_args(args[1:])
    elif args[0] == "sweep":
        _, fit_args = sweep.parse_args(args[1:])
        parse_only(["mnist_dense", "fit", *fit_args])
    else:
        assert args[0] in TRAINER_COMMANDS, f"unknown command {args[0]!r}"
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit:
            main([*args, "--print_config"])
        assert exit.value.code in (0, None)


@pytest.mark.parametrize(
    "page, words", package_commands(), ids=[" ".join(words)[:90] for _, words in package_commands()]
)
def test_every_package_command_of_the_docs_parses(page: str, words: list[str], capsys: pytest.CaptureFixture) -> None:
    try:
        parse_only(words)
    except SystemExit as exit:
        pytest.fail(f"{page}: `python -m {' '.join(words)}` does not parse: {capsys.readouterr().err[-600:]}")
        raise exit


def test_the_docs_name_at_least_the_commands_a_newcomer_needs() -> None:
    named = {words[1] if words[0] == "mnist_dense" else words[0] for _, words in package_commands()}
    assert {"fit", "test", "predict", "export", "serve", "sweep", "mnist_dense.show", "mnist_dense.shift"} <= named


def test_every_make_command_of_the_docs_is_a_target() -> None:
    commands = [command for page in PAGES for command in shell_commands(page) if command.startswith("make ")]
    assert len(commands) >= 5
    missing = {command.split()[1] for command in commands} - make_targets()
    assert not missing, f"make targets the docs name but the Makefile lacks: {missing}"


def test_the_bench_serve_arguments_of_the_docs_parse() -> None:
    commands = [shlex.split(command) for page in PAGES for command in shell_commands(page)]
    commands = [words for words in commands if words[:2] == ["make", "bench-serve"]]
    assert len(commands) >= 3
    for command in commands:
        args = next((word.removeprefix("ARGS=") for word in command if word.startswith("ARGS=")), "")
        options = serve_load.parse_args(shlex.split(args))
        assert set(options.only.split(",")) <= {"on", "off", "hostile"}, command


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def test_every_relative_link_resolves_to_a_file_and_its_heading() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # another site
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_every_file_of_the_repository_the_docs_name_exists() -> None:
    pattern = r"`((?:tests|mnist_dense|benchmarks|configs|examples|data)/[\w./-]*\w)"
    named = {(page.name, path) for page in PAGES for path in re.findall(pattern, page.read_text())}
    missing = [f"{page}: {path}" for page, path in sorted(named) if not (REPO / path.split("::")[0]).exists()]
    assert len(named) >= 20 and not missing, missing


def test_the_readme_is_read_in_five_minutes_and_maps_every_page_of_the_docs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for page in (REPO / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in text, f"the README's map lacks docs/{page.name}"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda page: page.name)
def test_user_docs_speak_of_the_software_not_of_how_it_was_made(page: Path) -> None:
    stamps = rf"^{re.escape(docs_tables.STAMP_START)}.*$"  # a table's stamp names the commit it ran on, as it must
    text = re.sub(stamps, "", page.read_text(), flags=re.MULTILINE)
    history = [
        r"\bissues? \d+",  # this project's issue numbers
        r"\bcommit [0-9a-f]{7,}\b",
        r"\b(final|last) commit\b",
        r"\bbuilt, measured and deleted\b",
        r"\b\d+ min \d+ s\b",  # a duration typed into prose
    ]
    found = [match.group(0) for pattern in history for match in re.finditer(pattern, text, flags=re.IGNORECASE)]
    assert not found, f"{page.name}: {found}"


def blocks_of(text: str) -> list[str]:
    return re.findall(r"<!-- ([\w-]+):start -->", re.sub(r"`[^`\n]*`", "", text))  # markers named in prose aside


@pytest.mark.parametrize("name", list(docs_tables.BLOCKS))
def test_every_table_of_figures_was_written_by_its_command_with_date_commit_and_machine(name: str) -> None:
    page, command = docs_tables.BLOCKS[name]
    start, end = docs_tables.markers(name)
    text = (REPO / page).read_text()
    assert text.count(start) == 1 and text.count(end) == 1, f"{page}: the {name} markers"
    block = text.split(start, 1)[1].split(end, 1)[0].strip()
    stamp = re.match(r"Written by `([^`]+)` on \d{4}-\d\d-\d\d \d\d:\d\d UTC, commit [0-9a-f]{7,}.* on \d+ CPUs", block)
    assert stamp, f"{page}: the {name} table does not open with its command's stamp; run `{command}`"
    assert stamp.group(1).split()[:3] == command.split()[:3]
    assert block.count("\n") >= 2, f"{page}: the {name} table is empty"


def test_no_page_holds_a_table_that_no_command_writes() -> None:
    for page in PAGES:
        for name in blocks_of(page.read_text()):
            assert name in docs_tables.BLOCKS and docs_tables.BLOCKS[name][0] == str(page.relative_to(REPO)), name


def test_a_table_is_written_between_its_markers_whole_and_nothing_else_changes(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- t:start -->\nold\n<!-- t:end -->\nafter\n")
    monkeypatch.setattr(docs_tables, "REPO", tmp_path)
    monkeypatch.setitem(docs_tables.BLOCKS, "t", ("page.md", "make t"))
    docs_tables.write_block("t", "new\ntable")
    assert page.read_text() == "before\n<!-- t:start -->\nnew\ntable\n<!-- t:end -->\nafter\n"
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]  # no partial file left
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs exactly one <!-- t:start -->"):
        docs_tables.write_block("t", "new")
    assert page.read_text() == "no markers\n"


PYTHON_BLOCKS = [(page, block) for page in PAGES for block in code_blocks(page, "python")]


def test_every_test_the_development_page_names_exists() -> None:
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DEVELOPMENT.read_text())
    assert len(named) == 13  # the promises table
    for file, name in named:
        assert re.search(rf"^def {name}\(", (REPO / file).read_text(), flags=re.MULTILINE), f"{file}::{name}"


def test_the_mutation_score_of_every_core_module_is_at_least_90_percent_and_adds_up() -> None:
    start, end = docs_tables.markers("mutation-scores")
    block = DEVELOPMENT.read_text().split(start, 1)[1].split(end, 1)[0]
    row = r"^\| `(mnist_dense[\w.]+)` \|" + r" (\d+) \|" * 6 + r" ([\d.]+)% \|$"
    rows = re.findall(row, block, flags=re.MULTILINE)
    assert len(rows) == 11  # every module of the scope
    for module, *counts, score in rows:
        mutants, not_run, equivalent, killed, timed_out, survived = map(int, counts)
        assert mutants == not_run + equivalent + killed + timed_out + survived, module
        assert not_run == 0, f"{module}: {not_run} mutants not run yet"
        assert float(score) == pytest.approx(100 * (killed + timed_out) / (killed + timed_out + survived), abs=0.05)
        assert float(score) >= 90, module
