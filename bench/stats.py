"""Latency statistics shared by the benchmarks (one definition of a percentile for every table)."""

import math
import statistics


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of them at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """n, p50/p90/p99, max and mean in milliseconds of samples taken in seconds."""
    millis = [1000 * s for s in seconds]
    return {
        "n": len(millis),
        "p50_ms": round(percentile(millis, 0.50), 2),
        "p90_ms": round(percentile(millis, 0.90), 2),
        "p99_ms": round(percentile(millis, 0.99), 2),
        "max_ms": round(max(millis), 2),
        "mean_ms": round(statistics.fmean(millis), 2),
    }
