"""`python -m mnist_dense sweep`: the space file's checks, a tiny search end to end, pruning, best.yaml and the
retraining in process on tiny digits; parallel processes on one study and Ctrl-C/SIGTERM as real processes."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from mnist_dense.commands import main
from mnist_dense.sweep import command, space, study
from tests.conftest import REPO
from tests.tiny_runs import logged

HOST = socket.gethostname()
TINY_SPACE = {
    "parameters": {
        "model.lr": {"low": 1.0e-7, "high": 1.0e-2, "log": True},
        "data.batch_size": {"choices": [16, 32]},
    },
    "first_trials": [{"model.lr": 1.0e-3, "data.batch_size": 32}],
}
# A few seconds a trial on the bundled MNIST, for the tests that start processes.
FEW_STEPS = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "1"]


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path


def tiny_sweep(tmp_path: Path, data_dir: Path, *extra: str, space: dict = TINY_SPACE) -> Path:
    """A search on the tiny digits (500 to train, 100 to validate, 2 epochs, no pictures); returns runs/sweep/tiny."""
    main(["sweep", "--space", str(write_space(tmp_path / "space.yaml", space)), "--study_name", "tiny",
          "--data.data_dir", str(data_dir), "--data.val_size", "100", "--trainer.max_epochs", "2",
          "--plots.enabled", "false", "--trainer.default_root_dir", str(tmp_path / "runs"), *extra])  # fmt: skip
    return tmp_path / "runs" / "sweep" / "tiny"


def load(folder: Path, name: str = "tiny", storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=study.storage_for(storage, folder))


def test_a_tiny_search_end_to_end(tmp_path: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "2", "--seed", "0")
    trials = load(folder).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params == TINY_SPACE["first_trials"][0]  # the queued first trial runs first
    for trial in trials:
        run = folder / f"trial_{trial.number}" / "version_0"
        assert (run / "config.yaml").is_file() and list((run / "checkpoints").glob("*.ckpt"))
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["lr"] == trial.params["model.lr"] and config["data"]["val_size"] == 100
        assert trial.value == pytest.approx(logged(run, "val_acc")[-1])  # the last epoch's validation accuracy
        assert list(trial.intermediate_values) == [0, 1]  # every epoch reported to the pruner
        assert not logged(run, "test_acc")  # no trial touches the test set
    printed = capsys.readouterr().out
    best = max(trials, key=lambda t: t.value)
    assert f"Best: trial {best.number}, val_acc {100 * best.value:.2f}%" in printed
    assert (folder / "trials.md").read_text().count("| COMPLETE |") == 2
    for plot in ("history", "importances", "slice", "intermediate"):
        assert (folder / f"{plot}.png").read_bytes().startswith(b"\x89PNG")


def test_best_yaml_reruns_the_best_trial_through_fit(tmp_path: Path, tiny_mnist: Path) -> None:
    folder = tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "2", "--seed", "0")
    best = load(folder).best_trial
    settings = yaml.safe_load((folder / "best.yaml").read_text())
    assert settings["model"]["lr"] == best.params["model.lr"] and settings["data"]["val_size"] == 100
    rerun = tmp_path / "rerun"
    main(["fit", "--config", str(folder / "best.yaml"), "--trainer.default_root_dir", str(rerun),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    # The same settings and seed on the CPU: the same validation accuracy, to the last digit.
    assert logged(rerun / "version_0", "val_acc")[-1] == pytest.approx(best.value, abs=1e-7)


def test_retrain_seeds_report_test_accuracy_per_seed_and_median(
    tmp_path: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "1", "--retrain_seeds", "0", "1")
    retrain = yaml.safe_load((folder / "retrain.yaml").read_text())
    assert retrain["trainer"]["max_epochs"] == 5 and retrain["data"]["val_size"] == 0  # the tutorial's budget
    accuracies = []
    for seed in (0, 1):
        run = folder / "retrain" / f"seed_{seed}" / "version_0"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == seed
        accuracies.append(100 * logged(run, "test_acc")[0])
        assert f"| seed {seed} | {accuracies[-1]:.2f}% |" in (folder / "retrain.md").read_text()
    assert f"| median | **{statistics.median(accuracies):.2f}%** |" in capsys.readouterr().out


def test_a_hopeless_trial_is_pruned(tmp_path: Path, tiny_mnist: Path) -> None:
    space = {
        **TINY_SPACE,
        "first_trials": [{"model.lr": 1.0e-3, "data.batch_size": 32}, {"model.lr": 1.0e-7, "data.batch_size": 32}],
        "pruner": {"percentile": 75, "startup_trials": 1, "warmup_epochs": 0},
    }
    folder = tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "2", "--trainer.max_epochs", "3", space=space)
    good, hopeless = load(folder).trials
    assert good.state.name == "COMPLETE" and list(good.intermediate_values) == [0, 1, 2]
    assert hopeless.state.name == "PRUNED" and list(hopeless.intermediate_values) == [0]  # stopped after epoch 1
    assert hopeless.intermediate_values[0] < good.intermediate_values[0]
    assert len(logged(folder / "trial_1" / "version_0", "val_acc")) == 1


@pytest.mark.parametrize(("error", "raised"), [("runtime", RuntimeError), ("data", SystemExit)])
def test_a_trial_that_fails_with_an_error_stops_the_search_and_is_not_queued_again(
    error: str, raised: type, tmp_path: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture
) -> None:
    """Only an interrupted trial runs again: one that failed would fail again, every run of the command."""
    failing = ["--trainer.callbacks+=tests.helpers.FailAtStep", "--trainer.callbacks.error", error]
    with pytest.raises(raised) as exit_info:
        tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "2", *failing)
    if raised is SystemExit:
        assert exit_info.value.code == 1 and "a data error at step 2" in capsys.readouterr().err
    (trial,) = load(tmp_path / "runs" / "sweep" / "tiny").trials
    assert trial.state.name == "FAIL" and "retry_of" not in trial.user_attrs


def test_best_yaml_holds_every_searched_value_also_one_equal_to_fits_default(tmp_path: Path, tiny_mnist: Path) -> None:
    """fit's batch size is 32; searched, it is written all the same, whichever trial wins."""
    space = {"parameters": {"model.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
                            "data.batch_size": {"choices": [32]}}, "first_trials": []}  # fmt: skip
    folder = tiny_sweep(tmp_path, tiny_mnist, "--n_trials", "1", "--seed", "0", space=space)
    for name in ("best.yaml", "retrain.yaml"):
        settings = yaml.safe_load((folder / name).read_text())
        assert settings["data"]["batch_size"] == 32 and settings["model"]["lr"] == load(folder).best_params["model.lr"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"parameters": {"model.lrr": {"low": 1.0e-4, "high": 1.0e-2}}}, "unknown parameter 'model.lrr'"),
        ({"parameters": {"data.batch_size": {"choices": []}}}, "'data.batch_size' has an empty range"),
        ({"parameters": {"model.lr": {"low": 1.0e-2, "high": 1.0e-4}}}, "'model.lr' has an empty range"),
        ({"parameters": {"model.lr": {"low": "3e-4", "high": 1.0e-2}}}, "write 3.0e-4"),
        ({"parameters": {"model.lr": {"low": 0.0, "high": 1.0e-2, "log": True}}}, "`log: true` needs low > 0"),
        ({"parameters": {"data.normalization": {"choices": ["unit", "zscore"]}}}, 'key "data.normalization"'),
        ({"first_trials": [{"model.lr": 0.5}]}, "first_trials[0] gives model.lr = 0.5, outside its range"),
        ({"first_trials": [{"model.hidden": 64}]}, "first_trials[0] sets 'model.hidden'"),
        ({"pruner": {"percentil": 25}}, "`pruner` takes numbers"),
        ({"sampler": "tpe"}, "unknown key 'sampler'"),
    ],
)
def test_a_bad_space_file_is_a_one_line_error(
    change: dict, named: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    space = write_space(tmp_path / "space.yaml", {**TINY_SPACE, "first_trials": [], **change})
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--space", str(space), "--trainer.default_root_dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {space}") and "\n" not in err and named in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_searched_flag_given_as_a_fit_flag_too_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "space.yaml", TINY_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--space", str(space), "--model.lr", "0.01", "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 1 and "--model.lr is given as a fit flag and searched" in capsys.readouterr().err


def test_without_the_extra_sweep_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(command, "optuna", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep"])
    assert exit_info.value.code == 1 and 'pip install -e ".[sweep]"' in capsys.readouterr().err


def test_the_bundled_space_starts_with_the_tutorial() -> None:
    defaults = space.flatten(space.fit_config([]))
    bundled = space.read_space(REPO / "configs" / "sweep.yaml", set(defaults))
    assert bundled.first_trials[0] == {name: defaults[name] for name in bundled.parameters}
    assert "model.hidden" not in bundled.parameters  # the search keeps the tutorial's 101,770-parameter network


def start_sweep(root: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnist_dense", "sweep", "--space", str(root / "space.yaml"),
               "--trainer.default_root_dir", str(root), *FEW_STEPS, *args]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_on_a_journal_only_a_trial_of_this_machine_whose_workers_lock_is_free_is_failed_and_queued_once(
    tmp_path: Path,
) -> None:
    storage = study.storage_for(None, tmp_path)
    shared = optuna.create_study(study_name="locks", storage=storage)
    gone = tmp_path / "gone.lock"
    gone.touch()  # a worker's lock file that no process holds: the worker ended
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    with study.worker_lock(tmp_path / "study.journal") as held:
        owners = {"alive": (held, HOST, 0), "gone": (gone, HOST, 0), "elsewhere": (gone, "another-machine", 0),
                  "unowned": (None, HOST, 0), "worn": (gone, HOST, study.MAX_RETRIES)}  # fmt: skip
        numbers = {}
        for name, (lock, host, retries) in owners.items():
            trial = shared.ask(x)
            trial.set_user_attr("host", host)
            trial.set_user_attr("retries", retries)
            if lock is not None:
                trial.set_user_attr("worker_lock", str(lock))
            numbers[name] = trial.number
        study.fail_lost_trials(shared, storage)
        study.fail_lost_trials(shared, storage)  # a second look changes nothing
        trials = shared.get_trials()
        retry = shared.ask(x)  # the next trial asked for: the queued one
    states = {name: trials[number].state.name for name, number in numbers.items()}
    assert states == {"alive": "RUNNING", "gone": "FAIL", "elsewhere": "RUNNING", "unowned": "RUNNING", "worn": "FAIL"}
    (queued,) = trials[len(owners) :]  # the gone worker's values, once; the worn-out trial's not again
    assert queued.state.name == "WAITING" and queued.user_attrs == {"retry_of": numbers["gone"], "retries": 1}
    assert retry.number == queued.number and retry.params == trials[numbers["gone"]].params
    assert not held.exists()  # a worker removes its own lock file when it ends


def test_the_fit_flags_are_passed_to_each_trial_in_order() -> None:
    options, fit_args = command.parse_args(["--n_trials", "2", "--trainer.max_steps", "-1", "--seed", "3",
                                          "--data.normalization=standard", "--retrain_seeds", "0", "1"])  # fmt: skip
    assert (options.n_trials, options.seed, options.retrain_seeds) == (2, 3, [0, 1])
    assert fit_args == ["--trainer.max_steps", "-1", "--data.normalization=standard"]


def test_a_config_file_sets_sweeps_options_and_a_flag_after_it_wins(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("n_trials: 3\nstudy_name: from_file\nseed: 7\nretrain_seeds: [0, 1]\n")
    options, fit_args = command.parse_args(["--n_trials", "5", "--config", str(config), "--model.lr", "0.01",
                                            "--n_trials", "1", "--retrain_seeds", "2"])  # fmt: skip
    assert (options.n_trials, options.study_name, options.seed, options.retrain_seeds) == (1, "from_file", 7, [2])
    assert fit_args == ["--model.lr", "0.01"]


def test_a_search_runs_with_its_options_from_a_config_file(tmp_path: Path, tiny_mnist: Path) -> None:
    space = write_space(tmp_path / "space.yaml", TINY_SPACE)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"space": str(space), "study_name": "filed", "n_trials": 1}))
    main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--data.data_dir", str(tiny_mnist),
          "--data.val_size", "100", "--trainer.max_epochs", "1", "--plots.enabled", "false",
          "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    (trial,) = load(tmp_path / "runs" / "sweep" / "filed", "filed").trials
    assert trial.state.name == "COMPLETE" and trial.params == TINY_SPACE["first_trials"][0]


def test_a_fit_flag_in_sweeps_config_file_is_an_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("n_trials: 1\nmodel.lr: 0.01\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and err.startswith(f"error: {config}: Option 'model.lr' is not accepted")
    assert "fit's flags go on sweep's command line" in err
