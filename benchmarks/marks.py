"""Time marks a benchmark process prints about itself, and the phases `make bench` makes of them.

A process prints `RESULT {"mark": NAME, "wall": time.time(), "cpu": time.process_time()}` at the moments it can
see through public means (a Lightning or Keras callback's hooks, `atexit`); the parent knows when it started the
process, when the process ended (`os.wait4`) and its CPU seconds. Every stretch between two consecutive moments
belongs to the phase of the mark that ends it, so the phases add up to the whole process. Standard library only:
the Keras program imports this module in a virtual environment without torch.
"""

from __future__ import annotations

import atexit
import json
import time

RESULT_PREFIX = "RESULT "
END = "end"  # the process has ended (the parent's clock and wait4's CPU seconds)
# Start-up is imports (and a CLI's argument parsing) and set-up (data read, model and Trainer built).
PHASES = ("imports", "set-up", "training", "test", "pictures", "shutdown")
# mark -> the phase of the stretch that ends at it
PHASE_ENDING_AT = {
    "made": "imports",  # a callback of the CLI's exists: imports and argument parsing are done
    "imported": "imports",
    "train_start": "set-up",  # the first step comes next
    "train_end": "training",
    "fit_end": "training",
    "test_setup": "pictures",  # Lightning: after on_fit_end, where the training curves are drawn
    "test_start": "test",  # loading the best checkpoint
    "test_end": "test",
    "test_teardown": "pictures",  # Lightning: the confusion matrix and misclassified digits drawn at on_test_end
    "exit": "test",  # the result printed, `atexit` runs: Python's shutdown comes next
    END: "shutdown",
}


def mark(name: str) -> None:
    """Print this process's wall clock and CPU seconds at moment `name` (on a line of its own)."""
    if name not in PHASE_ENDING_AT:
        raise ValueError(f"mark({name!r}): not one of {', '.join(PHASE_ENDING_AT)}")
    moment = {"mark": name, "wall": time.time(), "cpu": time.process_time()}
    print(f"\n{RESULT_PREFIX}{json.dumps(moment)}", flush=True)


def mark_exit() -> None:
    """Mark "exit" when the interpreter starts shutting down (atexit runs before Python's final collections)."""
    atexit.register(mark, "exit")


def phases(results: list[dict], started: float, ended: float, cpu_seconds: float) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each phase from a process's marks, its start and end (wall) and its CPU seconds.

    The stretch before the first mark belongs to its phase (the interpreter's own start included, CPU from 0).
    """
    moments = [(r["mark"], r["wall"], r["cpu"]) for r in results if "mark" in r]
    moments.append((END, ended, cpu_seconds))
    split = {phase: {"seconds": 0.0, "cpu_seconds": 0.0} for phase in PHASES}
    wall, cpu = started, 0.0
    for name, at, cpu_at in moments:
        phase = split[PHASE_ENDING_AT[name]]
        phase["seconds"] += at - wall
        phase["cpu_seconds"] += cpu_at - cpu
        wall, cpu = at, cpu_at
    return split
