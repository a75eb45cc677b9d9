"""Timing helpers shared by the benchmarks: warm up, repeat, report the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(
    name: str, ours_s: float, peer_s: float, peer: str, unit_scale: float = 1e6, unit: str = "us", target: str = ""
) -> float:
    """Print one comparison line; ratio = peer time / our time (higher is better for us)."""
    ratio = peer_s / ours_s
    print(
        f"{name:<44} ours {ours_s * unit_scale:10.1f} {unit}   {peer:<34} {peer_s * unit_scale:10.1f} {unit}"
        f"   {target:<10} ratio {ratio:6.2f}x",
        flush=True,
    )
    return ratio
