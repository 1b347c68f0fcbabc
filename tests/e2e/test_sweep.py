"""Searches in real processes: several sharing one study, a signal to one, a worker killed on a journal file."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.unit.test_sweep import TINY_SPACE, finish, load, start_sweep, write_space


def test_two_processes_share_a_study_and_a_third_continues_it(tmp_path: Path) -> None:
    write_space(tmp_path / "space.yaml", TINY_SPACE)
    workers = [start_sweep(tmp_path, "--study_name", "shared", "--n_trials", "2", "--seed", str(s)) for s in (1, 2)]
    for worker in workers:
        finish(worker)
    folder = tmp_path / "sweep" / "shared"
    trials = load(folder, "shared").trials
    finished = {"COMPLETE", "PRUNED"}  # the pruner may stop a weak one: finished all the same
    assert [t.number for t in trials] == list(range(4)) and {t.state.name for t in trials} <= finished
    assert sum(t.params == TINY_SPACE["first_trials"][0] for t in trials) == 1  # queued once, run once
    assert {t.user_attrs["folder"] for t in trials} == {str(folder / f"trial_{n}") for n in range(4)}
    for number in range(4):  # every trial ran exactly once, into its own folder
        assert [p.name for p in (folder / f"trial_{number}").iterdir()] == ["version_0"]
    finish(start_sweep(tmp_path, "--study_name", "shared", "--n_trials", "1"))
    trials = load(folder, "shared").trials
    assert len(trials) == 5 and trials[4].state.name in finished
    assert f"trial {load(folder, 'shared').best_trial.number}" in (folder / "best.yaml").read_text()


@pytest.mark.parametrize(("signum", "storage"), [(signal.SIGTERM, "sqlite"), (signal.SIGINT, "journal")])
def test_a_signal_stops_the_trial_and_the_next_run_continues(tmp_path: Path, signum: int, storage: str) -> None:
    write_space(tmp_path / "space.yaml", TINY_SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage == "sqlite" else None
    study_args = ["--study_name", "stop", *(["--storage", url] if url else [])]
    pause = ["--trainer.callbacks+=tests.helpers.PauseAtStep", "--trainer.callbacks.step"]
    process = start_sweep(tmp_path, *study_args, "--n_trials", "2", *pause, "3")
    lines = []
    for line in process.stdout:  # wait until the first trial is certainly mid-training
        lines.append(line)
        if line.startswith("PAUSED at step 3"):
            break
    time.sleep(0.5)
    process.send_signal(signum)
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signum, output[-3000:]
    assert "Trial 0 stopped and marked FAIL" in output
    folder = tmp_path / "sweep" / "stop"
    resume = output.split("Resume with:\n", 1)[1].splitlines()[0]  # the trial's own fit, not the sweep command
    assert resume.split()[:4] == ["python", "-m", "mnist_dense", "fit"]
    assert f"--trainer.default_root_dir {folder / 'trial_0'}" in resume
    assert (folder / "trial_0" / "version_0" / "checkpoints" / "interrupted.ckpt").is_file()
    failed, queued = load(folder, "stop", url).trials
    assert failed.state.name == "FAIL" and queued.state.name == "WAITING" and queued.user_attrs["retry_of"] == 0
    finish(start_sweep(tmp_path, *study_args, "--n_trials", "1", *pause, "1000"))  # the study is usable
    retried = load(folder, "stop", url).trials[1]
    assert retried.state.name == "COMPLETE" and retried.params == failed.params


def test_on_a_journal_file_a_killed_workers_trial_is_failed_by_the_survivor_and_runs_again_once(
    tmp_path: Path,
) -> None:
    write_space(tmp_path / "space.yaml", TINY_SPACE)
    go = tmp_path / "go"
    lost = start_sweep(tmp_path, "--study_name", "lost", "--n_trials", "1", "--seed", "0",
                       "--trainer.callbacks+=tests.helpers.PauseAtStep", "--trainer.callbacks.step", "3")  # fmt: skip
    for line in lost.stdout:  # the first trial (the queued one) is mid-training
        if line.startswith("PAUSED at step 3"):
            break
    until_go = ["--trainer.callbacks+=tests.helpers.PauseUntilFile", "--trainer.callbacks.path", str(go)]
    survivor = start_sweep(tmp_path, "--study_name", "lost", "--n_trials", "2", "--seed", "1", *until_go)
    before = []
    for line in survivor.stdout:  # its first trial is mid-training too, while the other worker lives
        before.append(line)
        if line.startswith("PAUSED at step 3"):
            break
    folder = tmp_path / "sweep" / "lost"
    assert [t.state.name for t in load(folder, "lost").trials] == ["RUNNING", "RUNNING"]  # a live worker's trial stays

    lost.send_signal(signal.SIGKILL)  # no handler runs, no last word
    lost.wait(timeout=30)
    go.touch()
    output = "".join(before) + finish(survivor)

    lost_trial, first, retry = load(folder, "lost").trials
    assert lost_trial.state.name == "FAIL" and lost_trial.params == TINY_SPACE["first_trials"][0]
    assert f"Trial 0 lost its worker (its lock {lost_trial.user_attrs['worker_lock']} is free)" in output
    assert first.state.name == retry.state.name == "COMPLETE" and "retry_of" not in first.user_attrs
    assert retry.user_attrs["retry_of"] == 0 and retry.params == lost_trial.params  # run again, once
    for trial in (first, retry):  # each finished trial ran exactly once, into its own folder
        assert [p.name for p in (folder / f"trial_{trial.number}").iterdir()] == ["version_0"]
    assert list((folder / "study.journal.workers").iterdir()) == [Path(lost_trial.user_attrs["worker_lock"])]
