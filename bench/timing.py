"""Small timing tools: sustained rates of a call and latency percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np


def sustained_rate(
    call: Callable[[int], object],
    items_per_call: int,
    seconds: float,
    min_calls: int = 1,
) -> float:
    """Items a second of ``call(i)`` repeated for at least ``seconds``.

    ``call`` receives the call's index, so it can walk through its input
    instead of hitting the same cached rows every time.
    """
    calls = 0
    started = time.perf_counter()
    while True:
        call(calls)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= min_calls:
            return calls * items_per_call / elapsed


def median_rate(
    call: Callable[[int], object],
    items_per_call: int,
    seconds: float,
    repeats: int = 3,
    min_calls: int = 1,
) -> float:
    """The median of ``repeats`` sustained rates: robust to a busy neighbour."""
    call(0)  # warm caches and lazy initialisation outside the timing
    return statistics.median(
        sustained_rate(call, items_per_call, seconds, min_calls) for _ in range(repeats)
    )


def percentiles(values, points=(50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``values``; None when empty."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {f"p{p}": None for p in points}
    return {f"p{p}": float(np.percentile(values, p)) for p in points}
