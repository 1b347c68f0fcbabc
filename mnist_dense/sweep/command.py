"""`python -m mnist_dense sweep`: an Optuna search whose every trial is an ordinary `fit` of this package.

The space file (`configs/sweep.yaml`) names `fit` flags and the values each may take; every other flag given to
`sweep` is a `fit` flag passed to each trial. Trial K is `fit` with its values, into runs/sweep/NAME/trial_K/
(version_0/config.yaml, metrics.csv, checkpoints/), so `fit --config .../trial_K/version_0/config.yaml` reruns it
alone. The objective is the last epoch's accuracy on the `--data.val_size` held-out training images (5,000 unless
given): no trial touches the test set. optuna-integration's `PyTorchLightningPruningCallback` reports every epoch's
value to Optuna's pruner, which stops hopeless trials (state PRUNED).

Several processes (here or on other machines) share one study through its storage: Optuna's journal file
(default runs/sweep/NAME/study.journal) on one machine, or a database URL. Each process runs `--n_trials` new
trials (Optuna's own meaning of n_trials); running the command again continues the study.
"""

from __future__ import annotations

import re
import signal
import sys
import warnings
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace

from mnist_dense.stopping import handled
from mnist_dense.sweep.space import SEARCH_DEFAULTS, SpaceError, check_values, fit_config, flatten, read_space

try:
    import optuna
    import optuna_integration  # noqa: F401  (the trials' pruning callback)
except ImportError:  # the `sweep` extra is not installed: `main` says how to install it
    optuna = None

SWEEP_EXTRA = 'pip install -e ".[sweep]"'
HEARTBEAT_SECONDS = 60  # a database worker's heartbeat; silent twice as long, its trial is failed and run again
# sweep's own options and the values each takes on the command line; every other flag is fit's.
OPTIONS = {"-h": 0, "--help": 0, "-c": 1, "--config": 1, "--print_config": 0, "--space": 1, "--n_trials": 1,
           "--study_name": 1, "--storage": 1, "--seed": 1, "--heartbeat": 1, "--retrain_seeds": "*"}  # fmt: skip
A_VALUE = re.compile(r"[^-]|-\d+$|-\d*\.\d+$")  # what argparse takes as a value, not a flag (negative numbers too)


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m mnist_dense sweep",
        description=__doc__.split("\n\n")[0] + " Every flag not listed here is a `fit` flag given to each trial"
        " (python -m mnist_dense fit --help).",
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="A YAML file of the options below.")
    parser.add_argument("--space", type=Path, default=Path("configs/sweep.yaml"), help="The search space file.")
    parser.add_argument("--n_trials", type=int, default=10, help="New trials this process runs (0: only report).")
    parser.add_argument("--study_name", type=str, default="search", help="The study; its files go to runs/sweep/NAME/.")
    parser.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="A database URL (sqlite:///..., postgresql+psycopg://...) or a journal file path"
        " (None: runs/sweep/NAME/study.journal).",
    )
    parser.add_argument(
        "--seed", type=int | None, default=None, help="Seed of the sampler (each parallel process its own)."
    )
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
    return parser


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """sweep's own options (with their values) and the `fit` flags, each in the order given."""
    own, fit_args, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        name, given = arg.split("=", 1)[0], "=" in arg
        if name not in OPTIONS:
            fit_args.append(arg)
            continue
        own.append(arg)
        takes = 0 if given else OPTIONS[name]
        while args and (takes == "*" and A_VALUE.match(args[0]) or takes == 1):
            own.append(args.pop(0))
            takes = 0 if takes == 1 else takes
    return own, fit_args


def check_config_files(parser: ArgumentParser, own: list[str]) -> None:
    """A `--config` file jsonargparse refuses: its message, with the file's name and what such a file holds."""
    files = [value for flag, value in zip(own, own[1:], strict=False) if flag in ("-c", "--config")]
    files += [arg.split("=", 1)[1] for arg in own if arg.startswith("--config=")]
    names = ", ".join(name[2:] for name in OPTIONS if name not in ("-h", "--help", "-c", "--config", "--print_config"))
    for file in files:
        parser.exit_on_error = False
        try:
            parser.parse_args(["--config", file])
        except ArgumentError as err:
            parser.exit_on_error = True
            parser.error(
                f"{file}: {' '.join(str(err).split())}. A sweep config file holds sweep's own options ({names});"
                " fit's flags go on sweep's command line."
            )
        parser.exit_on_error = True


def parse_args(argv: list[str]) -> tuple[Namespace, list[str]]:
    """sweep's options (from `--config` files and flags, later ones winning) and the `fit` flags for every trial."""
    own, fit_args = split_args(argv)
    parser = make_parser()
    check_config_files(parser, own)
    options = parser.parse_args(own)
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
    from mnist_dense.sweep import report, study  # they import optuna, which the extra brings

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
    with handled(study.on_sigterm, (signal.SIGTERM,)):
        storage = study.storage_for(options.storage, folder, options.heartbeat)
        opened = study.open_study(options.study_name, storage, space, options.seed)
        with study.worker_lock(study.journal_file(options.storage, folder)) as lock:
            study.run_trials(opened, space, fit_args, folder, options.n_trials, storage, lock)
        report.report(opened, space, fit_args, folder)
        if options.retrain_seeds:
            if not (folder / "retrain.yaml").exists():
                fail(f"no completed trial in study {options.study_name!r} yet: nothing to retrain.")
            report.retrain(folder, options.retrain_seeds)
