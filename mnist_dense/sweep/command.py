"""`python -m mnist_dense sweep`: an Optuna search whose every trial is an ordinary `fit` of this package.

The space file (`configs/sweep.yaml`) names `fit` flags and the values each may take; every other flag given to
`sweep` is a `fit` flag passed to each trial. Trial K is `fit` with its values, into runs/sweep/NAME/trial_K/
(version_0/config.yaml, metrics.csv, checkpoints/), so `fit --config .../trial_K/version_0/config.yaml` reruns it
alone. The objective is the last epoch's accuracy on the `--data.val_size` held-out training images (5,000 unless
given): no trial touches the test set. optuna-integration's `PyTorchLightningPruningCallback` reports every epoch's
value to Optuna's pruner, which stops hopeless trials (state PRUNED).

Trials run in this process, through the same `mnist_dense.commands.main` as `fit`, not as child processes: a trial then
costs no interpreter start and imports (4-5 s here, a quarter of a 5-epoch trial), and Optuna's Lightning callback
gets the live `Trial` without entering the trial's config.yaml. Failures and signals stay where `fit` already
handles them: an error marks the trial FAIL and stops the search with fit's message; Ctrl-C or SIGTERM stop the
trial after the step in progress (fit's own handling), mark it FAIL, queue its values again for the next run, and
exit 130 or 143. Writes to the study wait for a signal to be handled until they are whole.

Several processes (here or on other machines) share one study through its storage: Optuna's journal file
(default runs/sweep/NAME/study.journal) on one machine, or a database URL. Each process runs `--n_trials` new
trials (Optuna's own meaning of n_trials); running the command again continues the study.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_dense.commands import main as cli_main
from mnist_dense.constants import TEST_COUNT, TRAIN_COUNT, TUTORIAL_EPOCHS

try:
    import optuna
    from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback
except ImportError:  # the `sweep` extra is not installed: `main` says how to install it
    optuna = None

SWEEP_EXTRA = 'pip install -e ".[sweep]"'
MONITOR = "val_acc"
SEARCH_VAL_SIZE = 5000
# Flags every trial starts from (the command line's own fit flags come after them and win).
SEARCH_DEFAULTS = ["--data.val_size", str(SEARCH_VAL_SIZE)]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# The tutorial's budget for the retraining: 5 epochs, all 60,000 training images, the final model tested.
RETRAIN = [
    "--trainer.max_epochs", str(TUTORIAL_EPOCHS), "--trainer.max_steps", "-1", "--data.val_size", "0",
    "--trainer.limit_train_batches", "null", "--trainer.limit_val_batches", "null", "--trainer.limit_test_batches",
    "null", "--test_after_fit", "true",
]  # fmt: skip
ALWAYS_WRITTEN = ("seed_everything", "trainer.max_epochs", "model.hidden", "data.val_size")  # written even when default
SPACE_KEYS = ("parameters", "first_trials", "pruner")
PARAMETER_KEYS = ("choices", "low", "high", "log")
# Optuna's PercentilePruner: keep the top `percentile` % at each epoch from `warmup_epochs` on, after `startup_trials`.
PRUNER_KEYS = {"percentile": 75.0, "startup_trials": 5, "warmup_epochs": 2}
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PLOTS = ("history", "importances", "slice", "intermediate")


class SpaceError(ValueError):
    """The space file cannot be searched; the message names the file, the parameter and the fix."""


@dataclass(frozen=True)
class Parameter:
    """One `fit` flag and the values the search may give it: `choices`, or `low`..`high` (ints stay ints)."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if not _is_number(value) or (self.integer and not isinstance(value, int)):
            return False
        return self.low <= value <= self.high

    def corners(self) -> list[Any]:
        """The values that show whether `fit` accepts the whole range: every choice, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        return f"{self.low} to {self.high}" + (" (log scale)" if self.log else "")


@dataclass(frozen=True)
class Space:
    parameters: dict[str, Parameter]
    first_trials: list[dict[str, Any]]
    pruner: dict[str, float]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parameter(path: Path, name: str, spec: Any) -> Parameter:
    where = f"{path}: parameter {name!r}"
    if not isinstance(spec, dict) or not spec or set(spec) - set(PARAMETER_KEYS):
        raise SpaceError(
            f"{where}: give `choices: [...]`, or `low:` and `high:` (with `log: true` for a log scale); got {spec!r}."
        )
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list):
            raise SpaceError(f"{where}: `choices` takes a list and nothing beside it; got {spec!r}.")
        if not choices:
            raise SpaceError(f"{where} has an empty range (choices: []): list at least one value.")
        return Parameter(name, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    if not (_is_number(low) and _is_number(high)):
        raise SpaceError(
            f"{where}: low and high must both be numbers; got low={low!r}, high={high!r}"
            " (YAML reads 3e-4 as text: write 3.0e-4)."
        )
    if low >= high:
        raise SpaceError(
            f"{where} has an empty range: low {low} is not below high {high}. Swap them, or pass one value as a"
            f" fit flag (--{name} {low}) instead of searching it."
        )
    if not isinstance(log, bool) or (log and low <= 0):
        raise SpaceError(f"{where}: `log: true` needs low > 0 (got low {low}); `log` is true or false.")
    return Parameter(name, low=low, high=high, log=log)


def read_space(path: Path, fit_keys: set[str]) -> Space:
    """Read and check a space file against the `fit` flags, or raise `SpaceError` naming what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SpaceError(f"cannot read the space file {path}: {err.strerror}. Give one with --space.") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpaceError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict) or not spec["parameters"]:
        raise SpaceError(f"{path}: no `parameters:` mapping; see configs/sweep.yaml for the format.")
    if unknown := sorted(set(spec) - set(SPACE_KEYS)):
        raise SpaceError(f"{path}: unknown key {unknown[0]!r}; a space file has {', '.join(SPACE_KEYS)}.")
    parameters = {}
    for name, value in spec["parameters"].items():
        if name not in fit_keys:
            raise SpaceError(
                f"{path}: unknown parameter {name!r}: it is not a flag of `python -m mnist_dense fit` (see its"
                " --help; for example model.lr, data.batch_size, model.lr_schedule)."
            )
        parameters[name] = _parameter(path, name, value)
    first_trials = spec.get("first_trials") or []
    if not isinstance(first_trials, list) or not all(isinstance(t, dict) for t in first_trials):
        raise SpaceError(f"{path}: `first_trials` is a list of mappings from parameter names to values.")
    for index, values in enumerate(first_trials):
        for name, value in values.items():
            if name not in parameters:
                raise SpaceError(f"{path}: first_trials[{index}] sets {name!r}, which is not under `parameters`.")
            if not parameters[name].allows(value):
                raise SpaceError(
                    f"{path}: first_trials[{index}] gives {name} = {value!r}, outside its range"
                    f" ({parameters[name].describe()})."
                )
    pruner = spec.get("pruner") or {}
    if not isinstance(pruner, dict) or set(pruner) - set(PRUNER_KEYS) or not all(map(_is_number, pruner.values())):
        raise SpaceError(f"{path}: `pruner` takes numbers for {', '.join(PRUNER_KEYS)}; got {pruner!r}.")
    return Space(parameters, first_trials, {**PRUNER_KEYS, **pruner})


def as_flags(values: dict[str, Any]) -> list[str]:
    """{"model.lr": 0.002} -> ["--model.lr", "0.002"]: values as `fit` parses them."""
    return [arg for name, value in values.items() for arg in (f"--{name}", _flag_value(value))]


def _flag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@contextlib.contextmanager
def command_line(args: list[str]) -> Iterator[None]:
    """sys.argv as if the trial's `fit` had been typed: what fit prints to resume an interrupted trial is right."""
    argv = sys.argv
    sys.argv = [argv[0], *args]
    try:
        yield
    finally:
        sys.argv = argv


def fit_config(args: list[str]) -> dict[str, Any]:
    """The configuration `fit` would run with these flags (its `--print_config`), or fit's own error and exit 2."""
    printed, command = io.StringIO(), ["fit", *args, "--print_config"]
    try:
        with contextlib.redirect_stdout(printed), command_line(command):
            cli_main(command)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    return yaml.safe_load(printed.getvalue())


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"lr": 0.001}} -> {"model.lr": 0.001}: the names `fit` flags use."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, last = name.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return nested


def check_values(path: Path, space: Space, fit_args: list[str]) -> None:
    """Parse every choice and both ends of every range with `fit` now, not in trial 20."""
    rounds = max(len(p.corners()) for p in space.parameters.values())
    for index in range(rounds):
        values = {name: p.corners()[index % len(p.corners())] for name, p in space.parameters.items()}
        refused = io.StringIO()
        try:
            with contextlib.redirect_stderr(refused):
                fit_config([*fit_args, *as_flags(values)])
        except SystemExit:
            reason = " ".join(refused.getvalue().partition("error:")[2].split())
            raise SpaceError(f"{path}: fit refuses a value of the space: {reason}") from None


HEARTBEAT_SECONDS = 60  # a database worker's heartbeat; silent twice as long, its trial is failed and run again
MAX_RETRIES = 3  # how often the values of a trial whose worker was lost run again


def storage_for(
    value: str | None, folder: Path, heartbeat: int = HEARTBEAT_SECONDS
) -> optuna.storages.BaseStorage | str:
    """A database URL: Optuna's RDB storage with a heartbeat, so that the trial of a worker lost without a word (a
    machine gone, SIGKILL) is marked FAIL by the next worker that asks for a trial, and its values are queued again
    (`RetryHeartbeatStaleTrialCallback`). Otherwise a journal file (default folder/study.journal) that processes
    share; Optuna's journal storage keeps no heartbeat."""
    if value and "://" in value:
        return optuna.storages.RDBStorage(
            value,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        )
    path = Path(value) if value else folder / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until a write to the study is whole: no trial is left half-recorded.

    Python runs signal handlers in the main thread whichever thread the signal reached (torch has its own), so
    handlers that only note the signal, then the previous ones run on it, hold it reliably.
    """
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda s, _: received.append(s)) for signum in HELD_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside a trial's training exits 143; inside it Lightning's handler runs first and calls this too."""
    if signal.getsignal(signal.SIGTERM) is on_sigterm:  # Lightning's own handler is not installed: not training
        raise SystemExit(128 + signum)


def open_study(name: str, storage: Any, space: Space, seed: int | None) -> optuna.Study:
    """Create the study and queue its first trials, or load it when it exists (another process made it)."""
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: parallel trials differ
    pruner = optuna.pruners.PercentilePruner(
        space.pruner["percentile"],
        n_startup_trials=int(space.pruner["startup_trials"]),
        n_warmup_steps=int(space.pruner["warmup_epochs"]),
    )
    with signals_held():
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, direction="maximize", sampler=sampler, pruner=pruner
            )
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        for values in space.first_trials:
            study.enqueue_trial(values)
    return study


def run_trial(trial: optuna.Trial, space: Space, fit_args: list[str], folder: Path) -> float:
    """Trial K is `fit` with its values in folder/trial_K; returns its last epoch's validation accuracy."""
    with signals_held():
        values = {name: parameter.suggest(trial) for name, parameter in space.parameters.items()}
    root = folder / f"trial_{trial.number}"
    print(f"Trial {trial.number}: {_params_text(values)}", flush=True)
    args = ["fit", *SEARCH_DEFAULTS, *QUIET, *fit_args, *as_flags(values)]
    args += ["--trainer.default_root_dir", str(root), "--test_after_fit", "false"]
    with command_line(args):
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
    study: optuna.Study, space: Space, fit_args: list[str], folder: Path, count: int, storage: Any = None
) -> None:
    """`count` new trials, one after another; an interrupted trial is marked FAIL and queued again, and so is the
    trial of a worker whose heartbeat stopped (before each trial, as Optuna's `optimize` does)."""
    for _ in range(count):
        with signals_held():
            if isinstance(storage, optuna.storages.RDBStorage):
                optuna.storages.fail_stale_trials(study)
            trial = study.ask()
            trial.set_user_attr("folder", str(folder / f"trial_{trial.number}"))
            trial.set_user_attr("host", socket.gethostname())
        try:
            with heartbeat(storage, study, trial):
                value = run_trial(trial, space, fit_args, folder)
        except optuna.TrialPruned as pruned:
            with signals_held():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"Trial {trial.number} pruned: {pruned}", flush=True)
            continue
        except BaseException as err:
            stopped = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code in (130, 143))
            with signals_held():
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
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
        with signals_held():
            study.tell(trial, value)
        print(f"Trial {trial.number}: {MONITOR} {100 * value:.2f}%", flush=True)


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_short(value)}" for name, value in values.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study: optuna.Study) -> str:
    """Every trial: number, state, validation accuracy (the last one reported, for pruned trials), time, values."""
    lines = [f"| trial | state | {MONITOR} | minutes | values |", "| ---: | --- | ---: | ---: | --- |"]
    for trial in study.get_trials(deepcopy=False):
        value = f"{100 * trial.value:.2f}%" if trial.value is not None else ""
        minutes = f"{trial.duration.total_seconds() / 60:.1f}" if trial.duration else ""
        lines.append(f"| {trial.number} | {trial.state.name} | {value} | {minutes} | {_params_text(trial.params)} |")
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """Write beside the target and rename: a reader (or another process's report) never sees half a file."""
    partial = path.with_name(f".{path.name}.partial.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def settings_yaml(defaults: dict[str, Any], flags: list[str], keep: tuple[str, ...], header: list[str]) -> str:
    """A `fit --config` file holding what these flags change from fit's (flattened) defaults, and the `keep` keys."""
    config = flatten(fit_config(flags))
    changed = {k: v for k, v in config.items() if k in keep or k in ALWAYS_WRITTEN or defaults.get(k) != v}
    body = yaml.safe_dump(unflatten(changed), sort_keys=False)
    return "".join(f"# {line}\n" for line in header) + body


def write_best(study: optuna.Study, space: Space, fit_args: list[str], folder: Path) -> optuna.trial.FrozenTrial:
    """best.yaml: the best trial's settings as it ran; retrain.yaml: the same on the tutorial's budget."""
    best = study.best_trial
    flags = [*SEARCH_DEFAULTS, *fit_args, *as_flags(best.params)]
    keep, defaults = tuple(space.parameters), flatten(fit_config([]))
    score = f"{MONITOR} {100 * best.value:.2f}%"
    write_text(folder / "best.yaml", settings_yaml(defaults, flags, keep, [
        f"The best trial of study {study.study_name!r}: trial {best.number}, {score} (the last epoch, on the",
        "held-out --data.val_size training images). Its settings as the trial ran them; rerun with",
        f"python -m mnist_dense fit --config {folder / 'best.yaml'}",
    ]))  # fmt: skip
    write_text(folder / "retrain.yaml", settings_yaml(defaults, [*flags, *RETRAIN], keep, [
        f"Trial {best.number} of study {study.study_name!r} ({score}) on the tutorial's budget: {TUTORIAL_EPOCHS}"
        f" epochs on all {TRAIN_COUNT:,} training images, the final model tested.",
        f"python -m mnist_dense fit --config {folder / 'retrain.yaml'} --seed_everything N",
    ]))  # fmt: skip
    return best


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's own matplotlib plots as PNG; a plot the study cannot draw yet (too few trials) is skipped."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    draw = {
        "history": optuna_plots.plot_optimization_history,
        "importances": optuna_plots.plot_param_importances,
        "slice": optuna_plots.plot_slice,
        "intermediate": optuna_plots.plot_intermediate_values,
    }
    written = []
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning, "too few trials", matplotlib's layout notes
                axes = draw[name](study)
                figure = next(iter(getattr(axes, "flat", [axes]))).figure  # slice: one Axes per parameter
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        plt.close(figure)
        written.append(folder / f"{name}.png")
    return written


def report(study: optuna.Study, space: Space, fit_args: list[str], folder: Path) -> None:
    table = trials_table(study)
    write_text(folder / "trials.md", table + "\n")
    print(f"\nStudy {study.study_name!r}: {len(study.trials)} trials\n{table}")
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        print("No trial has completed yet: no best settings.")
        return
    best = write_best(study, space, fit_args, folder)
    print(f"Best: trial {best.number}, {MONITOR} {100 * best.value:.2f}%: {_params_text(best.params)}")
    print(f"Written: {folder / 'trials.md'}, {folder / 'best.yaml'}, {folder / 'retrain.yaml'}")
    plots = write_plots(study, folder)
    if plots:
        print("Plots: " + ", ".join(str(p) for p in plots))


def retrain(folder: Path, seeds: list[int]) -> None:
    """retrain.yaml once per seed (fit, then the test set once); the test accuracy of each and the median."""
    accuracies = []
    for seed in seeds:
        root = folder / "retrain" / f"seed_{seed}"
        args = ["fit", "--config", str(folder / "retrain.yaml"), *QUIET, "--seed_everything", str(seed)]
        args += ["--trainer.default_root_dir", str(root)]
        with command_line(args):
            cli = cli_main(args)
        accuracies.append(100 * float(cli.trainer.callback_metrics["test_acc"]))
    rows = [f"| seed {seed} | {acc:.2f}% |" for seed, acc in zip(seeds, accuracies, strict=True)]
    text = "\n".join([
        f"`python -m mnist_dense fit --config {folder / 'retrain.yaml'} --seed_everything N`: test accuracy,"
        f" {TEST_COUNT:,} images", "", "| seed | test accuracy |", "| --- | ---: |", *rows,
        f"| median | **{statistics.median(accuracies):.2f}%** |",
    ])  # fmt: skip
    write_text(folder / "retrain.md", text + "\n")
    print(f"\n{text}\nWritten: {folder / 'retrain.md'}")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_dense sweep",
        description=__doc__.split("\n\n")[0] + " Every flag not listed here is a `fit` flag given to each trial"
        " (python -m mnist_dense fit --help).",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--space", type=Path, default=Path("configs/sweep.yaml"), help="The search space file.")
    parser.add_argument("--n_trials", type=int, default=10, help="New trials this process runs (0: only report).")
    parser.add_argument("--study_name", default="search", help="The study; its files go to runs/sweep/NAME/.")
    parser.add_argument(
        "--storage",
        help="A database URL (sqlite:///..., postgresql+psycopg://...) or a journal file path"
        " (None: runs/sweep/NAME/study.journal).",
    )
    parser.add_argument("--seed", type=int, help="Seed of the sampler (each parallel process its own).")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=HEARTBEAT_SECONDS,
        help="With a database: seconds between a worker's heartbeats. A trial whose worker is silent for twice as"
        " long is marked FAIL by the next worker that starts a trial, and its values run again.",
    )
    parser.add_argument(
        "--retrain_seeds",
        type=int,
        nargs="*",
        default=[],
        help="Then train the best settings on the tutorial's budget (retrain.yaml) once per seed and test each.",
    )
    options, fit_args = parser.parse_known_args(argv)
    if options.n_trials < 0:
        parser.error(f"--n_trials {options.n_trials}: give 0 or more new trials.")
    if options.heartbeat < 1:
        parser.error(f"--heartbeat {options.heartbeat}: give a whole number of seconds, 1 or more.")
    return options, fit_args


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: list[str]) -> None:
    options, fit_args = parse_args(argv)
    if optuna is None:
        fail(f"sweep needs optuna and optuna-integration, which come with this package's `sweep` extra: {SWEEP_EXTRA}"
             " (or `make install`, which installs it).")  # fmt: skip
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")  # each trial's fit is given its args
    base = fit_config([*SEARCH_DEFAULTS, *fit_args])  # fit's own error (exit 2) for a bad fit flag
    if not base["data"]["val_size"]:
        fail("the search needs held-out images to score trials: give --data.val_size N (N > 0; 5,000 by default).")
    try:
        space = read_space(options.space, set(flatten(base)))
        given = {arg.removeprefix("--").split("=")[0] for arg in fit_args if arg.startswith("--")}
        if both := sorted(given & set(space.parameters)):
            raise SpaceError(f"--{both[0]} is given as a fit flag and searched in {options.space}: drop one of them.")
        check_values(options.space, space, fit_args)
    except SpaceError as err:
        fail(str(err))
    folder = Path(base["trainer"]["default_root_dir"]) / "sweep" / options.study_name
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial prints its own lines
    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        storage = storage_for(options.storage, folder, options.heartbeat)
        study = open_study(options.study_name, storage, space, options.seed)
        run_trials(study, space, fit_args, folder, options.n_trials, storage)
        report(study, space, fit_args, folder)
        if options.retrain_seeds:
            if not (folder / "retrain.yaml").exists():
                fail(f"no completed trial in study {options.study_name!r} yet: nothing to retrain.")
            retrain(folder, options.retrain_seeds)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
