"""What a search leaves in runs/sweep/NAME/: the trial table, best.yaml and retrain.yaml, Optuna's plots, and the
best settings retrained on the tutorial's budget (retrain.md). Rewritten by every `sweep` command, from the study."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml

from mnist_dense.atomic import write_atomically
from mnist_dense.commands import main as cli_main
from mnist_dense.constants import TEST_COUNT, TRAIN_COUNT, TUTORIAL_EPOCHS
from mnist_dense.sweep.space import SEARCH_DEFAULTS, Space, as_flags, fit_config, flatten, params_text, unflatten
from mnist_dense.sweep.study import MONITOR, QUIET

# The tutorial's budget for the retraining: 5 epochs, all 60,000 training images, the final model tested.
RETRAIN = [
    "--trainer.max_epochs", str(TUTORIAL_EPOCHS), "--trainer.max_steps", "-1", "--data.val_size", "0",
    "--trainer.limit_train_batches", "null", "--trainer.limit_val_batches", "null", "--trainer.limit_test_batches",
    "null", "--test_after_fit", "true",
]  # fmt: skip
ALWAYS_WRITTEN = ("seed_everything", "trainer.max_epochs", "model.hidden", "data.val_size")  # written even when default
PLOTS = ("history", "importances", "slice", "intermediate")


def trials_table(study: optuna.Study) -> str:
    """Every trial: number, state, validation accuracy (the last one reported, for pruned trials), time, values."""
    lines = [f"| trial | state | {MONITOR} | minutes | values |", "| ---: | --- | ---: | ---: | --- |"]
    for trial in study.get_trials(deepcopy=False):
        value = f"{100 * trial.value:.2f}%" if trial.value is not None else ""
        minutes = f"{trial.duration.total_seconds() / 60:.1f}" if trial.duration else ""
        lines.append(f"| {trial.number} | {trial.state.name} | {value} | {minutes} | {params_text(trial.params)} |")
    return "\n".join(lines)


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
    write_atomically(folder / "best.yaml", settings_yaml(defaults, flags, keep, [
        f"The best trial of study {study.study_name!r}: trial {best.number}, {score} (the last epoch, on the",
        "held-out --data.val_size training images). Its settings as the trial ran them; rerun with",
        f"python -m mnist_dense fit --config {folder / 'best.yaml'}",
    ]))  # fmt: skip
    write_atomically(folder / "retrain.yaml", settings_yaml(defaults, [*flags, *RETRAIN], keep, [
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
    write_atomically(folder / "trials.md", table + "\n")
    print(f"\nStudy {study.study_name!r}: {len(study.trials)} trials\n{table}")
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        print("No trial has completed yet: no best settings.")
        return
    best = write_best(study, space, fit_args, folder)
    print(f"Best: trial {best.number}, {MONITOR} {100 * best.value:.2f}%: {params_text(best.params)}")
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
        cli = cli_main(args)
        accuracies.append(100 * float(cli.trainer.callback_metrics["test_acc"]))
    rows = [f"| seed {seed} | {acc:.2f}% |" for seed, acc in zip(seeds, accuracies, strict=True)]
    text = "\n".join([
        f"`python -m mnist_dense fit --config {folder / 'retrain.yaml'} --seed_everything N`: test accuracy,"
        f" {TEST_COUNT:,} images", "", "| seed | test accuracy |", "| --- | ---: |", *rows,
        f"| median | **{statistics.median(accuracies):.2f}%** |",
    ])  # fmt: skip
    write_atomically(folder / "retrain.md", text + "\n")
    print(f"\n{text}\nWritten: {folder / 'retrain.md'}")
