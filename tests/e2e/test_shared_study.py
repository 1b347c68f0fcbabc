"""The several-machines sweep of docs/scaling.md on a real PostgreSQL server, one worker lost to SIGKILL mid-trial.

The server is Debian's PostgreSQL 15, started here in a temporary folder on a loopback port (as the `postgres` user
when the tests run as root: initdb refuses root) and stopped at the end. Without it the test is skipped, unless
MNIST_DENSE_REQUIRE_POSTGRES is set (CI sets it, and installs the server): then it fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_sweep import FEW_STEPS, TINY_SPACE, write_space

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="the PostgreSQL driver comes with the sweep extra: pip install -e '.[sweep]'")

SERVER = Path("/usr/lib/postgresql/15/bin")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1 with user `optuna` and database `mnist_sweep`: its host:port."""
    if not (SERVER / "initdb").is_file():
        reason = f"no PostgreSQL server at {SERVER} (Debian: apt-get install postgresql; .ci/run installs it)"
        if os.environ.get("MNIST_DENSE_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="mnist-dense-postgres-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*command: object) -> None:
        subprocess.run([*as_user, *map(str, command)], check=True, capture_output=True, timeout=120)

    port, data = free_port(), folder / "data"
    run(SERVER / "initdb", "-A", "trust", "-U", "optuna", "-D", data)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    run(SERVER / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-o", options, "start")
    try:
        run(SERVER / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "optuna", "mnist_sweep")
        yield f"127.0.0.1:{port}"
    finally:
        run(SERVER / "pg_ctl", "-D", data, "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def docs_commands(host: str) -> tuple[list[str], list[str]]:
    """docs/scaling.md's worker and watch commands, word for word but for the server's address and credentials."""
    text = (REPO / "docs" / "scaling.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL) if "postgresql+psycopg://" in b]
    worker, watch = (shlex.split(b.replace("\\\n", " ").replace("optuna:secret@DBHOST:5432", f"optuna@{host}"))
                     for b in blocks)  # fmt: skip
    assert worker[:4] == watch[:4] == ["python", "-m", "mnist_dense", "sweep"]
    return [sys.executable, *worker[1:]], [sys.executable, *watch[1:]]


def start(command: list[str], root: Path, *args: str) -> subprocess.Popen:
    given = ["--space", str(root / "space.yaml"), "--trainer.default_root_dir", str(root), "--heartbeat", "1"]
    return subprocess.Popen([*command, *given, *FEW_STEPS, *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def with_value(command: list[str], flag: str, value: str) -> list[str]:
    command = list(command)
    command[command.index(flag) + 1] = value
    return command


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number, since 2.8
def test_three_workers_share_a_study_on_postgresql_and_a_killed_workers_trial_runs_again_once(
    postgres: str, tmp_path: Path
) -> None:
    write_space(tmp_path / "space.yaml", TINY_SPACE)
    worker, watch = docs_commands(postgres)
    url = worker[worker.index("--storage") + 1]

    # The first worker creates the study, starts its first trial and is killed there: no handler, no last word.
    pause = ["--trainer.callbacks+=tests.helpers.PauseAtStep", "--trainer.callbacks.step", "3"]
    lost = start(with_value(with_value(worker, "--n_trials", "1"), "--seed", "0"), tmp_path, *pause)
    for line in lost.stdout:
        if line.startswith("PAUSED at step 3"):
            break
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=30)
    (running,) = optuna.load_study(study_name="dense128", storage=url).trials
    assert running.state.name == "RUNNING"

    # Two workers join; the first trial each starts after the lost worker's grace period fails its trial and
    # queues its values again.
    joined = [start(with_value(with_value(worker, "--n_trials", "2"), "--seed", str(s)), tmp_path) for s in (1, 2)]
    for process in joined:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]

    trials = optuna.load_study(study_name="dense128", storage=url).trials
    assert len(trials) == 5 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    lost_trial, *finished = trials
    assert lost_trial.state.name == "FAIL" and all(t.state.name in ("COMPLETE", "PRUNED") for t in finished)
    retried_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    (retry,) = [t for t in finished if retried_of(t) is not None]  # run again once
    assert retried_of(retry) == lost_trial.number
    assert retry.params == lost_trial.params == TINY_SPACE["first_trials"][0]
    folder = tmp_path / "sweep" / "dense128"
    for trial in finished:  # each finished trial ran exactly once, into its own folder
        assert [p.name for p in (folder / f"trial_{trial.number}").iterdir()] == ["version_0"]

    # The docs' way to watch the study: no new trial, the table of all five.
    shown = subprocess.run([*watch, "--space", str(tmp_path / "space.yaml"), "--trainer.default_root_dir",
                            str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "Study 'dense128': 5 trials" in shown.stdout and "| 0 | FAIL |" in shown.stdout
    assert len(optuna.load_study(study_name="dense128", storage=url).trials) == 5
