"""Wall-clock timing of repeated calls, shared by the benchmarks."""

from __future__ import annotations

import time


def time_calls(call, runs: int, warmup: int) -> list[float]:
    """Wall times in ms of `runs` calls of `call()` after `warmup` untimed calls (`call` must block until done)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - start))
    return times
