"""Shared by the micro-benchmarks (run as scripts from this folder): the median time of a call."""

from __future__ import annotations

import time

import numpy as np


def median_ms(fn, runs: int, warmup: int = 10) -> float:
    """Median wall time of ``fn()`` in ms over ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1000)
