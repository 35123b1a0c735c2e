"""Percentiles and summaries shared by the load generator and the phases."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / p99.9 / max of latencies in ms, rounded to 0.01 ms."""
    ordered = sorted(values_ms)
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), 2),
        "p90": round(percentile(ordered, 90), 2),
        "p99": round(percentile(ordered, 99), 2),
        "p99.9": round(percentile(ordered, 99.9), 2),
        "max": round(ordered[-1], 2) if ordered else math.nan,
    }
