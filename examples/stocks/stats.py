"""Confidence intervals for directional accuracy: Wilson (iid) and a day-block bootstrap.

The 20 stocks of one day move together (market moves), so the samples of a day are not
independent; resampling whole days gives the honest (wider) interval.
"""

from __future__ import annotations

import math

import numpy as np


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (centre - half, centre + half)


def day_bootstrap(correct: np.ndarray, days: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``correct`` resampling whole days."""
    uniq, inv = np.unique(days, return_inverse=True)
    hits = np.bincount(inv, weights=correct.astype(np.float64), minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(reps, len(uniq)))
    means = hits[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def summarise(pred: np.ndarray, y: np.ndarray, days: np.ndarray, seed: int = 0) -> dict:
    """Accuracy with its Wilson and day-bootstrap 95 % intervals, and the share predicted up."""
    correct = pred == y
    k, n = int(correct.sum()), int(len(y))
    return {
        "accuracy": k / n,
        "n": n,
        "wilson95": list(wilson(k, n)),
        "day_bootstrap95": list(day_bootstrap(correct, days, seed=seed)),
        "predicted_up": float(np.mean(pred == 1)),
    }
