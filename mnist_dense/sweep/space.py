"""The space file (`configs/sweep.yaml`): `fit` flags and the values each may take, checked before anything runs.

Values become `fit` flags, and `fit`'s own parser (LightningCLI's) turns flags into the configuration a trial runs
with: the space's names are checked against it, every choice and both ends of every range are parsed by it, and
best.yaml is written from it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jsonargparse import ArgumentError, ArgumentParser

from mnist_dense.cli import MNISTDenseCLI, command_name

if TYPE_CHECKING:
    import optuna

SEARCH_VAL_SIZE = 5000
# Flags every trial starts from (the command line's own fit flags come after them and win).
SEARCH_DEFAULTS = ["--data.val_size", str(SEARCH_VAL_SIZE)]
SPACE_KEYS = ("parameters", "first_trials", "pruner")
PARAMETER_KEYS = ("choices", "low", "high", "log")
# Optuna's PercentilePruner: keep the top `percentile` % at each epoch from `warmup_epochs` on, after `startup_trials`.
PRUNER_KEYS = {"percentile": 75.0, "startup_trials": 5, "warmup_epochs": 2}


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


def check_values(path: Path, space: Space, fit_args: list[str]) -> None:
    """Parse every choice and both ends of every range with `fit` now, not in trial 20."""
    rounds = max(len(p.corners()) for p in space.parameters.values())
    for index in range(rounds):
        values = {name: p.corners()[index % len(p.corners())] for name, p in space.parameters.items()}
        parser = fit_parser()
        parser.exit_on_error = False  # fit's refusal comes back as an exception, to be worded for the space file
        try:
            parser.parse_args([*fit_args, *as_flags(values)])
        except ArgumentError as err:
            raise SpaceError(f"{path}: fit refuses a value of the space: {' '.join(str(err).split())}") from None
        finally:
            parser.exit_on_error = True


def as_flags(values: dict[str, Any]) -> list[str]:
    """{"model.lr": 0.002} -> ["--model.lr", "0.002"]: values as `fit` parses them."""
    return [arg for name, value in values.items() for arg in (f"--{name}", _flag_value(value))]


def _flag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def params_text(values: dict[str, Any]) -> str:
    """A trial's values on one line, floats to 4 significant digits."""
    return ", ".join(f"{name}={_short(value)}" for name, value in values.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _ParseOnly(MNISTDenseCLI):
    """`MNISTDenseCLI(run=False)` that stops once it has parsed: no Trainer, model or data module is built."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


@functools.cache
def fit_parser() -> ArgumentParser:
    """`fit`'s own LightningCLI parser, made once; its errors read as fit's (`usage: ... fit`)."""
    parser = _ParseOnly(args=["--seed_everything", "false"], run=False).parser  # false: nothing seeded now
    parser.prog = f"{command_name()} [options] fit"
    return parser


def fit_config(args: list[str]) -> dict[str, Any]:
    """The configuration `fit` runs with for these flags, as `fit --print_config` writes it; fit's own error and
    exit 2 for a flag it refuses."""
    parser = fit_parser()
    return yaml.safe_load(parser.dump(parser.parse_args(args), skip_unset=False))


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
