"""Resume: a stopped-and-resumed run ends where the same run left alone ends, bit for bit on the CPU."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from mnist_dense import atomic, checkpoints
from mnist_dense.checkpoints import AtomicCheckpointIO, find_latest_checkpoint, read_checkpoint
from mnist_dense.commands import main
from tests.conftest import REPO

TINY = ["--data.val_size", "100", "--data.batch_size", "32", "--test_after_fit", "false"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def fit(root: Path, *args: str) -> None:
    """`python -m mnist_dense fit` in this process (so the tiny data fixture applies)."""
    main(["fit", "--trainer.default_root_dir", str(root), *QUIET, *args])


def assert_same_training_state(a: Path, b: Path) -> None:
    """Weights, Adam's moments and step counts, scheduler state: all bitwise equal."""
    first, second = read_checkpoint(a), read_checkpoint(b)
    assert first["global_step"] == second["global_step"] and first["epoch"] == second["epoch"]
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name
    for state_a, state_b in zip(
        first["optimizer_states"][0]["state"].values(), second["optimizer_states"][0]["state"].values(), strict=True
    ):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[key], state_b[key]), key
    assert first["lr_schedulers"] == second["lr_schedulers"]


def epoch_metrics(root: Path, epoch: int) -> dict[str, str]:
    """The metrics logged for one epoch, from whichever version_N folder logged them."""
    rows = [row for path in sorted(root.glob("version_*/metrics.csv")) for row in csv.DictReader(path.open())]
    merged: dict[str, str] = {}
    for row in rows:
        if row["epoch"] == str(epoch):
            merged.update({key: value for key, value in row.items() if value and key not in ("step", "epoch")})
    return merged


def test_one_epoch_then_resume_last_equals_two_epochs(tiny_mnist: Path, tmp_path: Path) -> None:
    data = ["--data.data_dir", str(tiny_mnist), *TINY]
    fit(tmp_path / "alone", *data, "--trainer.max_epochs", "2")
    fit(tmp_path / "resumed", *data, "--trainer.max_epochs", "1")
    first_run = {p: p.read_bytes() for p in (tmp_path / "resumed").rglob("*") if p.is_file()}
    fit(tmp_path / "resumed", *data, "--trainer.max_epochs", "2", "--ckpt_path", "last")

    assert_same_training_state(
        tmp_path / "alone" / "version_0" / "checkpoints" / "last.ckpt",
        tmp_path / "resumed" / "version_1" / "checkpoints" / "last.ckpt",
    )
    assert epoch_metrics(tmp_path / "alone", 1) == epoch_metrics(tmp_path / "resumed", 1)
    assert {p: p.read_bytes() for p in first_run} == first_run  # the first run's files are untouched


def test_onecycle_resumed_from_an_epoch_checkpoint_equals_the_run_left_alone(tiny_mnist: Path, tmp_path: Path) -> None:
    data = ["--data.data_dir", str(tiny_mnist), *TINY]
    schedule = ["--model.lr_schedule", "onecycle", "--trainer.max_epochs", "3", "--checkpoint.save_top_k", "-1"]
    fit(tmp_path / "alone", *data, *schedule)
    epoch1 = next((tmp_path / "alone" / "version_0" / "checkpoints").glob("epoch1-*.ckpt"))
    fit(tmp_path / "resumed", *data, *schedule, "--ckpt_path", str(epoch1))
    assert_same_training_state(
        tmp_path / "alone" / "version_0" / "checkpoints" / "last.ckpt",
        tmp_path / "resumed" / "version_0" / "checkpoints" / "last.ckpt",
    )


def test_resumed_from_a_mid_epoch_checkpoint_skips_exactly_the_batches_done(tiny_mnist: Path, tmp_path: Path) -> None:
    """A stock ModelCheckpoint(every_n_train_steps) saves mid-epoch; the loader's position comes back with it."""
    data = ["--data.data_dir", str(tiny_mnist), *TINY, "--trainer.max_epochs", "2"]
    every_5 = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "5"]
    every_5 += ["--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.dirpath", str(tmp_path / "steps")]
    fit(tmp_path / "alone", *data, *every_5)
    step_21 = read_checkpoint(tmp_path / "steps" / "epoch=1-step=20.ckpt")  # 16 steps an epoch: 4 into epoch 2
    assert step_21["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "position": 4 * 32, "layout": {"train_images": 500, "batch_size": 32, "processes": 1}}
    ]
    fit(tmp_path / "resumed", *data, "--ckpt_path", str(tmp_path / "steps" / "epoch=1-step=20.ckpt"))
    assert_same_training_state(
        tmp_path / "alone" / "version_0" / "checkpoints" / "last.ckpt",
        tmp_path / "resumed" / "version_0" / "checkpoints" / "last.ckpt",
    )


def test_last_ckpt_is_the_latest_epoch_even_when_it_is_not_the_best(tiny_mnist: Path, tmp_path: Path) -> None:
    fit(tmp_path, "--data.data_dir", str(tiny_mnist), *TINY, "--trainer.max_epochs", "3",
        "--trainer.callbacks+=tests.helpers.SpoilLastEpoch")  # fmt: skip
    folder = tmp_path / "version_0" / "checkpoints"
    (best,) = folder.glob("epoch*.ckpt")
    assert read_checkpoint(folder / "last.ckpt")["epoch"] == 2 and read_checkpoint(best)["epoch"] < 2


def test_ckpt_path_last_picks_the_newest_checkpoint_of_the_run_folder(tmp_path: Path) -> None:
    older, newer = tmp_path / "version_0" / "checkpoints" / "last.ckpt", tmp_path / "version_1" / "checkpoints"
    older.parent.mkdir(parents=True)
    newer.mkdir(parents=True)
    older.write_bytes(b"x")
    (newer / "interrupted.ckpt").write_bytes(b"x")
    (newer / ".last.ckpt.partial").write_bytes(b"x")  # a save that never finished is not a candidate
    os.utime(older, ns=(1, 1))
    assert find_latest_checkpoint(tmp_path) == newer / "interrupted.ckpt"
    assert find_latest_checkpoint(tmp_path / "version_0") == older


# --- interrupted runs: real processes, real signals, on the bundled MNIST ---------------------------

REAL = ["--data.val_size", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "300"]
REAL += ["--test_after_fit", "false", *QUIET]


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def start_cli(*args: str) -> subprocess.Popen:
    env = ENV
    command = [sys.executable, "-m", "mnist_dense", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process: subprocess.Popen, pattern: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if pattern in line:
            return lines
    raise AssertionError(f"{pattern!r} never printed:\n{''.join(lines)[-3000:]}")


def test_atomic_save_keeps_the_previous_checkpoint_whole_until_the_new_one_is_renamed_onto_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"generation": 1}, target)
    seen_at_rename = []
    real_replace = checkpoints.os.replace

    def checked_replace(source, destination):
        seen_at_rename.append(torch.load(destination, weights_only=True))  # the old file, still whole
        assert torch.load(source, weights_only=True) == {"generation": 2}  # the new one, complete and flushed
        real_replace(source, destination)

    monkeypatch.setattr(checkpoints.os, "replace", checked_replace)
    AtomicCheckpointIO().save_checkpoint({"generation": 2}, target)
    assert seen_at_rename == [{"generation": 1}]
    assert torch.load(target, weights_only=True) == {"generation": 2}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def another_filesystem_than(folder: Path) -> Path | None:
    """A writable folder on another filesystem than `folder` (Linux's /dev/shm is a tmpfs), or None."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != folder.stat().st_dev:
        return shm
    return None


def rename_within_a_folder_only(source, destination) -> None:
    """os.replace as it behaves when each folder is a filesystem of its own: EXDEV across folders."""
    if Path(source).resolve().parent != Path(destination).resolve().parent:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source), None, str(destination))
    REAL_REPLACE(source, destination)


REAL_REPLACE = os.replace


@pytest.mark.parametrize("filesystems", ["real", "simulated"])
def test_checkpoints_are_written_beside_their_target_so_a_temporary_folder_elsewhere_does_not_matter(
    filesystems: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TMPDIR on another filesystem than the run (as on many clusters): every save still ends in one rename."""
    if filesystems == "real":
        other = another_filesystem_than(tmp_path)
        if other is None:
            pytest.skip("no second filesystem here (/dev/shm); the simulated case still runs")
        temporary = Path(tempfile.mkdtemp(dir=other))
        monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    else:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(checkpoints.os, "replace", rename_within_a_folder_only)
    try:
        fit(tmp_path / "runs", "--data.data_dir", str(tiny_mnist), *TINY, "--trainer.max_epochs", "1")
    finally:
        if filesystems == "real":
            shutil.rmtree(temporary)
    folder = tmp_path / "runs" / "version_0" / "checkpoints"
    assert read_checkpoint(folder / "last.ckpt")["epoch"] == 0 and not list(folder.glob(".*partial*"))


def test_the_cli_writes_every_checkpoint_through_the_atomic_plugin(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed = []
    real_replace = checkpoints.os.replace
    monkeypatch.setattr(
        checkpoints.os, "replace", lambda src, dst: (renamed.append(Path(dst).name), real_replace(src, dst))
    )
    fit(tmp_path, "--data.data_dir", str(tiny_mnist), *TINY, "--trainer.max_epochs", "2")
    written = sorted(p.name for p in (tmp_path / "version_0" / "checkpoints").iterdir())
    assert {name for name in renamed if name.endswith(".ckpt")} == set(written) and "last.ckpt" in written
    assert renamed.count("last.ckpt") == 2  # rewritten at the end of each epoch, atomically each time


def test_the_newest_checkpoint_wins_and_equal_times_are_decided_by_the_path(tmp_path: Path) -> None:
    older, newer = tmp_path / "z" / "last.ckpt", tmp_path / "a" / "interrupted.ckpt"
    for path, seconds in ((older, 1_000), (newer, 2_000)):
        path.parent.mkdir()
        path.write_bytes(b"x")
        os.utime(path, ns=(seconds * 10**9, seconds * 10**9))
    assert find_latest_checkpoint(tmp_path) == newer  # not the one whose path sorts last
    os.utime(newer, ns=(1_000 * 10**9, 1_000 * 10**9))
    assert find_latest_checkpoint(tmp_path) == older  # the same time: the path that sorts last


def test_ckpt_path_last_with_nothing_to_resume_names_every_folder_it_searched(tmp_path: Path) -> None:
    with pytest.raises(checkpoints.CheckpointError) as refused:
        checkpoints.resolve_last(tmp_path / "runs", tmp_path / "logs", tmp_path / "runs")
    assert str(refused.value) == (
        f"--ckpt_path last: no last.ckpt or interrupted.ckpt under {tmp_path / 'runs'} or {tmp_path / 'logs'}, so"
        " there is nothing to resume. Check --trainer.default_root_dir or your logger's save_dir (where you trained),"
        " give a checkpoint file with --ckpt_path PATH, or drop --ckpt_path to start a new run."
    )


def test_a_checkpoint_gives_back_the_evaluation_batch_size_of_its_run() -> None:
    assert checkpoints.trained_eval_batch_size({"datamodule_hyper_parameters": {"eval_batch_size": 500}}, 1000) == 500
    assert checkpoints.trained_eval_batch_size({"datamodule_hyper_parameters": {}}, 1000) == 1000
    assert checkpoints.trained_eval_batch_size({}, 1000) == 1000  # saved by a script without the data module


def test_weights_of_another_size_without_a_path_are_named_as_the_checkpoint() -> None:
    from mnist_dense import MNISTClassifier

    small, large = MNISTClassifier(hidden=16), MNISTClassifier(hidden=32)
    saved = {"state_dict": small.state_dict(), "hyper_parameters": {"hidden": 16}}
    with pytest.raises(checkpoints.CheckpointError, match=r"^The checkpoint holds a DenseNet\(hidden=16\) network"):
        checkpoints.check_network(None, saved, {"class_path": "mnist_dense.model.DenseNet",
                                                "init_args": {"hidden": 32}}, large.state_dict())  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fit", "--model.lr", "0.01"], "python -m mnist_dense fit --model.lr 0.01 --ckpt_path 'my runs/i.ckpt'"),
        (
            ["fit", "--ckpt_path", "old.ckpt", "--trainer.max_epochs", "3", "--ckpt_path=last"],
            "python -m mnist_dense fit --trainer.max_epochs 3 --ckpt_path 'my runs/i.ckpt'",
        ),
    ],  # fmt: skip
)
def test_the_resume_command_is_the_command_run_with_the_interrupted_checkpoint(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_dense.callbacks.interrupt import resume_command

    assert resume_command("my runs/i.ckpt", argv) == expected
    monkeypatch.setattr(sys, "argv", ["/path/to/mnist_dense/__main__.py", *argv])
    assert resume_command("my runs/i.ckpt") == expected  # the command line this process was given


@pytest.mark.parametrize(("signum", "code"), [(None, None), (signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_fit_exits_as_the_shell_counts_a_signal(signum, code, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_dense.callbacks import interrupt

    monkeypatch.setattr(interrupt, "received", signum)
    assert interrupt.interrupted_exit_code() == code


FIX = "Give another checkpoint with --ckpt_path (for example the run's last.ckpt), or drop --ckpt_path."


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "Checkpoint {path} does not exist. {fix}"),
        ("folder", "Checkpoint {path} is not a file. {fix}"),
        ("empty", "Checkpoint {path} is empty (0 bytes): it was never written completely. {fix}"),
        ("garbage", "Checkpoint {path} is corrupt or not a Lightning checkpoint ({detail}). {fix}"),
        (
            "plain",
            "Checkpoint {path} is not a checkpoint of this package's training (missing state_dict,"
            " hyper_parameters, epoch, global_step, loops). {fix}",
        ),
        ("partly", "Checkpoint {path} is not a checkpoint of this package's training (missing loops). {fix}"),
    ],  # fmt: skip
)
def test_a_checkpoint_that_cannot_be_used_gets_one_sentence_naming_it_and_the_fix(
    kind: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.ckpt"
    detail = ""
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
        try:
            torch.load(path, weights_only=True)
        except Exception as err:  # what torch says is part of the message
            detail = str(err).strip().splitlines()[0]
    elif kind == "plain":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "partly":
        torch.save({"state_dict": {}, "hyper_parameters": {}, "epoch": 0, "global_step": 0}, path)
    with pytest.raises(checkpoints.CheckpointError) as refused:
        read_checkpoint(path)
    assert str(refused.value) == message.format(path=path, fix=FIX, detail=detail)


def test_a_checkpoint_is_peeked_at_from_a_path_an_open_file_or_a_url_and_the_file_is_left_where_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "some.ckpt"
    content = {key: 0 for key in checkpoints.REQUIRED_KEYS}
    torch.save(content, path)
    assert checkpoints.peek_checkpoint(path) == content
    assert checkpoints.peek_checkpoint(path.as_uri()) == content  # fsspec: file://, s3://, ...
    with open(path, "rb") as f:
        assert checkpoints.peek_checkpoint(f) == content and f.tell() == 0
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.peek_checkpoint(tmp_path / "none.ckpt")


def test_the_atomic_writer_refuses_storage_options_and_makes_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^AtomicCheckpointIO takes no storage_options\.$"):
        AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "x.ckpt", storage_options={"compress": True})
    assert not (tmp_path / "x.ckpt").exists()
    AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "new" / "deeper" / "x.ckpt")
    assert torch.load(tmp_path / "new" / "deeper" / "x.ckpt", weights_only=True) == {"a": 1}
    partial = atomic.partial_path(tmp_path / "x.ckpt")  # hidden, beside it, its own for this process and thread
    assert partial.parent == tmp_path and partial.name.startswith(".x.") and partial.name.endswith(".partial.ckpt")
