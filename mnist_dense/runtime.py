"""How the command line sets up its own process: the allocator, CUDA's availability check, the collector, and what
is printed. Each setting is applied by `mnist_dense.commands.main`, with its measured reason in one line; none changes a
computed figure. A Python caller of `main(args)` keeps its own allocator settings."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import warnings

# glibc's mallopt parameters (malloc.h): allocations under the first come from the heap, not a fresh mapping;
# free memory at the heap's top is handed back to the kernel only above the second.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_ALLOCATIONS_BELOW = 64 << 20
TRIM_ABOVE = 256 << 20

# Lightning's warnings, on loading a checkpoint, about the training state of its ModelCheckpoints.
TRAINING_STATE_WARNINGS = (".*The dirpath has changed from.*", ".*callbacks used to create the checkpoint need to be.*")


class NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger/litmodels": logged on every Trainer, no flag stops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Only what a user can act on is printed: the filters of warnings and log lines that carry nothing for them."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # the data is in memory: workers only cost
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")  # Lightning 2.6 on torch 2.14's API
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, NoAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(NoAdvertisements())


def quiet_training_state() -> None:
    """test, validate and predict never resume training: Lightning's warnings about restoring what the checkpoint
    callbacks saved (their best scores and folder) would only puzzle."""
    for message in TRAINING_STATE_WARNINGS:
        warnings.filterwarnings("ignore", message)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for the next step instead of returning it to the kernel.

    A conv step frees and allocates feature maps of about 1.6 MB; with glibc's adaptive defaults some runs hand them
    back and fault them in again every step (up to 20 s of system time in a 5-epoch conv fit). Fixed thresholds make
    every run like the fast ones, for a little more peak memory. Where MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ is set, or malloc is not glibc's, nothing changes.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, HEAP_ALLOCATIONS_BELOW)
    mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE)


def skip_failing_nvml_check() -> None:
    """Leave Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` only where NVML can answer it.

    `import lightning` sets it so that `torch.cuda.is_available()` asks NVML instead of initializing CUDA, and
    torch 2.14's optimizers call that every step. Where no NVML library is installed (a CUDA build of torch on a
    machine without an NVIDIA driver, like pip's default torch on a CPU machine) each call fails to load it and then
    asks `cudaGetDeviceCount` anyway: the same answer, 0.15-0.3 ms later every step (`benchmarks/step_costs.py`).
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def freeze_imports() -> None:
    """Collect once and freeze the objects the imports left (some 400,000, made while `mnist_dense/__init__.py`
    paused the collector): every later collection skips them, the final ones at exit too, about 5% of a default
    fit's process. Not frozen at the end: that would keep a Trainer alive."""
    gc.collect()
    gc.freeze()


def set_up(command_line: bool) -> None:
    """Everything above; the allocator's thresholds only for the command line's own process."""
    if command_line:
        keep_freed_memory()
    skip_failing_nvml_check()
    quiet_lightning()
    freeze_imports()
