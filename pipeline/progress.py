"""A progress line for long work that reads well in a terminal and in ``ray job logs``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def progress_printer(what: str, stream: TextIO | None = None, every_s: float = 2.0) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback printing ``what: done/total (pct) rate ETA`` at most every
    ``every_s`` seconds and once at the end; one line each, so log files stay readable."""
    start = time.perf_counter()
    last = [-every_s]

    def report(done: int, total: int) -> None:
        now = time.perf_counter() - start
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        rate = done / now if now > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("inf")
        out = stream or sys.stdout
        print(f"{what}: {done}/{total} ({100 * done / max(total, 1):.0f}%), {rate:.0f}/s, ETA {eta:.0f}s",
              file=out, flush=True)  # fmt: skip

    return report
