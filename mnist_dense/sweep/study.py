"""The study: its storage, sampler and pruner, and the trials this process runs, each an ordinary `fit`.

Trials run in this process, through the same `mnist_dense.commands.main` as `fit`, not as child processes: a trial then
costs no interpreter start and imports (4-5 s here, a quarter of a 5-epoch trial), and Optuna's Lightning callback
gets the live `Trial`. Failures and signals stay where `fit` already handles them: an error marks the trial FAIL and
stops the search with fit's message; Ctrl-C or SIGTERM stop the trial after the step in progress (fit's own
handling), mark it FAIL, queue its values again for the next run, and exit 130 or 143. Writes to the study wait for a
signal to be handled until they are whole.

A worker lost without a word (SIGKILL, a machine gone) leaves its trial RUNNING. On a database Optuna's heartbeat
finds it; a journal file has no heartbeat, so each worker holds an OS lock (flock) on a file of its own for as long as
it runs and names that file in its trials: a RUNNING trial of this machine whose lock is free has lost its worker.
Either way the next worker to start a trial marks it FAIL and queues its values again, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from mnist_dense.commands import main as cli_main
from mnist_dense.stopping import exit_status, held
from mnist_dense.sweep.space import SEARCH_DEFAULTS, Space, as_flags, params_text

MONITOR = "val_acc"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
MAX_RETRIES = 3  # how often the values of a trial whose worker was lost run again


def journal_file(value: str | None, folder: Path) -> Path | None:
    """The journal file the study lives in (default folder/study.journal), or None for a database URL."""
    if value and "://" in value:
        return None
    return Path(value) if value else folder / "study.journal"


def storage_for(value: str | None, folder: Path, heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """A database URL: Optuna's RDB storage with a heartbeat every `heartbeat` seconds (None: none, to read), so
    that the trial of a worker lost without a word (a machine gone, SIGKILL) is marked FAIL by the next worker that
    asks for a trial, and its values are queued again (`RetryHeartbeatStaleTrialCallback`). Otherwise a journal file
    (default folder/study.journal) that processes share; it keeps no heartbeat (`worker_lock` stands in)."""
    path = journal_file(value, folder)
    if path is None:
        if heartbeat is None:
            return optuna.storages.RDBStorage(value)
        return optuna.storages.RDBStorage(
            value,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside a trial's training exits 143; inside it Lightning's handler runs first and calls this too."""
    if signal.getsignal(signal.SIGTERM) is on_sigterm:  # Lightning's own handler is not installed: not training
        raise SystemExit(exit_status(signum))


def open_study(name: str, storage: Any, space: Space, seed: int | None) -> optuna.Study:
    """Create the study and queue its first trials, or load it when it exists (another process made it)."""
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: parallel trials differ
    pruner = optuna.pruners.PercentilePruner(
        space.pruner["percentile"],
        n_startup_trials=int(space.pruner["startup_trials"]),
        n_warmup_steps=int(space.pruner["warmup_epochs"]),
    )
    with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, direction="maximize", sampler=sampler, pruner=pruner
            )
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        for values in space.first_trials:
            study.enqueue_trial(values)
    return study


@contextlib.contextmanager
def worker_lock(journal: Path | None) -> Iterator[Path | None]:
    """An OS lock on a file of this process's own beside the journal, held while it runs; None for a database.

    The kernel releases it when the process ends, however it ends (SIGKILL too), so a free lock means a gone worker;
    the name is unique (host, process id, a random part), so no later process takes it over.
    """
    if journal is None:
        yield None
        return
    folder = journal.with_name(f"{journal.name}.workers")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.lock"
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        path.unlink(missing_ok=True)  # this worker's trials are all told by now: nothing is left to judge by it
        os.close(descriptor)


def worker_gone(lock: str) -> bool:
    """Whether the worker that holds this lock file has ended: the lock is free. A missing file is not judged."""
    try:
        descriptor = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # closing also releases a lock just taken
    return True


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark FAIL the RUNNING trials of this machine whose worker's lock is free, and queue their values again.

    Two workers may find the same trial at once: the journal lets only the first FAIL through (the other gets
    `UpdateFinishedTrialError`), and only that one queues the values. A trial retried `MAX_RETRIES` times is not
    queued again: its values may be what kills the worker (memory, say).
    """
    host, study_id = socket.gethostname(), storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = trial.user_attrs.get("worker_lock")
        if trial.user_attrs.get("host") != host or not lock or not worker_gone(lock):
            continue  # another machine's lock means nothing here; a trial without one cannot be judged
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker marked it first, and queues it
        retries = trial.user_attrs.get("retries", 0)
        queued = retries < MAX_RETRIES and bool(trial.params)
        if queued:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1})
        print(
            f"Trial {trial.number} lost its worker (its lock {lock} is free): marked FAIL"
            + ("; its values are queued again." if queued else f"; run {retries + 1} times, not queued again."),
            file=sys.stderr,
        )


def run_trial(trial: optuna.Trial, space: Space, fit_args: list[str], folder: Path) -> float:
    """Trial K is `fit` with its values in folder/trial_K; returns its last epoch's validation accuracy."""
    with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
        values = {name: parameter.suggest(trial) for name, parameter in space.parameters.items()}
    root = folder / f"trial_{trial.number}"
    print(f"Trial {trial.number}: {params_text(values)}", flush=True)
    args = ["fit", *SEARCH_DEFAULTS, *QUIET, *fit_args, *as_flags(values)]
    args += ["--trainer.default_root_dir", str(root), "--test_after_fit", "false"]
    cli = cli_main(args, callbacks=[PyTorchLightningPruningCallback(trial, monitor=MONITOR)])
    if MONITOR not in cli.trainer.callback_metrics:
        raise RuntimeError(f"trial {trial.number} logged no {MONITOR}: the search needs a validation set.")
    return float(cli.trainer.callback_metrics[MONITOR])


@contextlib.contextmanager
def heartbeat(storage: Any, study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat in the storage while it runs, where the storage keeps heartbeats (what Optuna's
    own `optimize` does; trials here are asked and told one by one)."""
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.get_heartbeat_interval() is None:
        yield
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), trial.number
    )
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trials(
    study: optuna.Study,
    space: Space,
    fit_args: list[str],
    folder: Path,
    count: int,
    storage: Any = None,
    lock: Path | None = None,
) -> None:
    """`count` new trials, one after another; an interrupted trial is marked FAIL and queued again, and so is the
    trial of a lost worker (before each trial, as Optuna's `optimize` does): by its heartbeat on a database, by its
    free `lock` on a journal file."""
    for _ in range(count):
        with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
            if isinstance(storage, optuna.storages.RDBStorage):
                optuna.storages.fail_stale_trials(study)
            elif lock is not None:
                fail_lost_trials(study, storage)
            trial = study.ask()
            trial.set_user_attr("folder", str(folder / f"trial_{trial.number}"))
            trial.set_user_attr("host", socket.gethostname())
            if lock is not None:
                trial.set_user_attr("worker_lock", str(lock))
        try:
            with heartbeat(storage, study, trial):
                value = run_trial(trial, space, fit_args, folder)
        except optuna.TrialPruned as pruned:
            with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
                study.tell(trial, state=TrialState.PRUNED)
            print(f"Trial {trial.number} pruned: {pruned}", flush=True)
            continue
        except BaseException as err:
            stopped = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code in (130, 143))
            with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
                study.tell(trial, state=TrialState.FAIL)
                if stopped and trial.params:
                    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            if not stopped:
                raise
            print(
                f"Trial {trial.number} stopped and marked FAIL in study {study.study_name!r}; its values are queued"
                " again. Run the same command to continue the study.",
                file=sys.stderr,
            )
            raise SystemExit(err.code if isinstance(err, SystemExit) else 130) from None
        with held():  # Ctrl-C and SIGTERM wait until the study's record is whole
            study.tell(trial, value)
        print(f"Trial {trial.number}: {MONITOR} {100 * value:.2f}%", flush=True)
