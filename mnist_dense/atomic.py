"""Every file the package writes is whole or absent: written beside its target, flushed to disk, renamed into place.

Beside, not in $TMPDIR: a rename is atomic only within one filesystem. A process killed while writing leaves the
earlier file as it was (and at worst a hidden `.NAME.*.partial`, never under the target's name); a reader, or
another process writing the same file at once, sees one whole version or the other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def partial_path(target: Path) -> Path:
    """The hidden file `target` is written to first: one for each process and thread (parallel sweep workers may
    unpack the same data file at once), keeping the target's suffix (exporters choose their format by it)."""
    return target.with_name(f".{target.stem}.{os.getpid()}-{threading.get_ident()}.partial{target.suffix}")


@contextmanager
def replaced_atomically(target: str | os.PathLike) -> Iterator[Path]:
    """Yields the partial path to write; when the block ends, fsyncs it and renames it onto `target`.

    If the block raises, the partial file is removed and `target` is left untouched. The folder is created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    try:
        yield partial
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    finally:
        with suppress(OSError):  # the error that brought us here is the one to report
            partial.unlink(missing_ok=True)


def write_atomically(target: str | os.PathLike, data: bytes | str) -> None:
    """`target` holds `data` (text as UTF-8), whole, or is left as it was."""
    with replaced_atomically(target) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
