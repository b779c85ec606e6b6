"""Progress lines on stderr for the benchmarks, so a long run shows it is alive: which section,
run and step is going, and how long each took. stdout keeps the results alone.

    progress = Progress("replication")
    progress.section("catch-up", runs=3)        # [replication] == catch-up (3 runs)
    for run in progress.runs("catch-up", 3):    # [replication] run 2/3: catch-up ...
        ...                                     # [replication] run 2/3: catch-up ... 1.48 s
    with progress.step("storing 100,000 documents"):
        ...
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

__all__ = ["Progress"]


def _took(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


class Progress:
    """Prints ``[name] message`` lines to stderr, flushed at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        print(f"[{self.name}] {message}", file=sys.stderr, flush=True)

    def section(self, name: str, runs: int | None = None) -> None:
        count = "" if runs is None else f" ({runs} run{'s' if runs != 1 else ''})"
        elapsed = _took(time.perf_counter() - self.started)
        self.log(f"== {name}{count}, {elapsed} into the benchmark")

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Says ``what ...`` now and ``what ... <seconds>`` when the block ends (``failed
        after`` if it raised)."""
        self.log(f"{what} ...")
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.log(f"{what} ... failed after {_took(time.perf_counter() - started)}")
            raise
        self.log(f"{what} ... {_took(time.perf_counter() - started)}")

    def runs(self, what: str, count: int) -> Iterator[int]:
        """``range(count)``, each run announced and timed as a :meth:`step`."""
        for run in range(count):
            with self.step(f"run {run + 1}/{count}: {what}"):
                yield run
