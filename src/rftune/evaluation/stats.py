"""Statistics of evaluation results: the unbiased pass@k estimator and percentile-bootstrap intervals.

pass@k for one problem with ``n`` samples of which ``c`` are correct is ``1 - C(n-c, k) / C(n, k)`` (Chen et al.,
2021): the chance that at least one of k samples drawn without replacement from the n is correct. It is computed
as a product, ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the large binomials.

Intervals are 95% percentile-bootstrap intervals of a mean over rows (problems, documents, games): rows are drawn
with replacement ``resamples`` times from a seeded generator. A paired difference between two players resamples
the per-row differences, so both players' rows are drawn together and their shared difficulty cancels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct out of `n` samples (``1 <= k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_interval(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """(low, high): the percentile-bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap of an empty list of values")
    rows = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))  # [R, N]
    means = data[rows].mean(axis=1)  # [R]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def estimate(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> dict[str, float] | None:
    """``{"mean", "low", "high", "n"}`` of `values` (NaNs, i.e. not applicable, left out); None when all are."""
    data = [float(v) for v in values if not np.isnan(v)]
    if not data:
        return None
    low, high = bootstrap_interval(data, resamples, seed)
    return {"mean": float(np.mean(data)), "low": low, "high": high, "n": len(data)}


def paired_difference(values: Sequence[float], baseline: Sequence[float], resamples: int = 1000,
                      seed: int = 0) -> dict[str, float] | None:
    """`estimate` of the per-row differences ``values - baseline`` (rows where either is NaN left out)."""
    if len(values) != len(baseline):
        raise ValueError(f"a paired difference needs the same rows: {len(values)} vs {len(baseline)} values")
    return estimate([a - b for a, b in zip(values, baseline)], resamples, seed)
