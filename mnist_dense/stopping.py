"""Ctrl-C and SIGTERM: how every command of the package stops.

One rule everywhere: where a stop signal arrives it is only noted, and the work stops at a safe point of its own:
`fit` after the training step in progress (with `interrupted.ckpt`), `sweep` once a write to the study is whole,
`serve` once the requests in flight are answered. The process then exits with the shell's status for the signal,
128 + its number: 130 after Ctrl-C, 143 after SIGTERM. Python runs a handler in the main thread whichever thread
the signal reached, so a handler that notes the signal is reliable wherever torch's threads are.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], None]


def exit_status(signum: int) -> int:
    """The shell's exit status for a process a signal stopped: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + signum


@contextmanager
def handled(handler: Handler, signals: tuple[int, ...] = STOP_SIGNALS, keep_ignored: bool = False) -> Iterator[None]:
    """`handler` for each of `signals` while the block runs, each signal's previous handler back after it.

    `keep_ignored`: a signal the process was started ignoring stays ignored (a shell's background job ignores
    Ctrl-C, and so should what it runs).
    """
    previous = {signum: signal.getsignal(signum) for signum in signals}
    for signum, old in previous.items():
        if not (keep_ignored and old is signal.SIG_IGN):
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def held() -> Iterator[None]:
    """Stop signals wait until the block is done: noted, then raised again once it ends, for the handlers that were
    in place before (a write that must be whole, such as a trial's record in a study, is never cut in half)."""
    received: list[int] = []
    try:
        with handled(lambda signum, _: received.append(signum)):
            yield
    finally:
        for signum in received:
            signal.raise_signal(signum)
