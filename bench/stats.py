"""Figures the benches share."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The q-quantile as the value at rank int(q * n) of the sorted values (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
