"""Accuracy, balanced accuracy and ROC AUC with 95 % day-block bootstrap intervals.

The 20 stocks of a day move together, so windows of one label day are not independent:
every interval resamples whole label days (2,000 resamples, seeded), as
``examples/stocks/stats.py`` does for accuracy (its ``day_bootstrap`` and ``wilson`` are
reused here). AUC and balanced accuracy are not means of per-window values, so they are
bootstrapped with per-window weights = how often the window's day was drawn. Differences
between two predictors on the same windows ("model minus baseline") use the same draws
for both (a paired bootstrap).
"""

from __future__ import annotations

import numpy as np

from examples.stocks.stats import day_bootstrap, wilson

REPS = 2000


def _day_draws(days: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(days, return_inverse=True)
    rng = np.random.default_rng(seed)
    return inv, rng.integers(0, len(uniq), size=(reps, len(uniq)))


def _weights(inv: np.ndarray, draw: np.ndarray, n_days: int) -> np.ndarray:
    return np.bincount(draw, minlength=n_days)[inv].astype(np.float64)


def weighted_auc(score: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """ROC AUC (ties count one half) with per-window weights; exact Mann-Whitney form."""
    w = np.ones(len(y)) if w is None else w
    _, g = np.unique(score, return_inverse=True)
    pos = np.bincount(g, weights=w * (y == 1))
    neg = np.bincount(g, weights=w * (y != 1))
    below = np.cumsum(neg) - neg
    den = pos.sum() * neg.sum()
    return float(np.sum(pos * (below + 0.5 * neg)) / den) if den > 0 else float("nan")


def balanced_accuracy(pred: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    w = np.ones(len(y)) if w is None else w
    pos, neg = y == 1, y != 1
    tpr = np.sum(w * (pos & (pred == 1))) / np.sum(w * pos)
    tnr = np.sum(w * (neg & (pred != 1))) / np.sum(w * neg)
    return float(0.5 * (tpr + tnr))


def _interval(v: np.ndarray) -> list[float]:
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]


def summarise(pred: np.ndarray, score: np.ndarray, y: np.ndarray, days: np.ndarray, seed: int = 0,
              reps: int = REPS) -> dict:
    """Accuracy (Wilson + day bootstrap), balanced accuracy and AUC of ``score`` (higher =
    class 1) with day-bootstrap 95 % intervals, and the share predicted 1."""
    correct = pred == y
    k, n = int(correct.sum()), int(len(y))
    inv, draws = _day_draws(days, reps, seed)
    nd = int(inv.max()) + 1
    bacc, auc = np.empty(reps), np.empty(reps)
    for r in range(reps):
        w = _weights(inv, draws[r], nd)
        bacc[r] = balanced_accuracy(pred, y, w)
        auc[r] = weighted_auc(score, y, w)
    return {
        "accuracy": k / n,
        "accuracy_wilson95": list(wilson(k, n)),
        "accuracy_day_bootstrap95": list(day_bootstrap(correct, days, reps=reps, seed=seed)),
        "balanced_accuracy": balanced_accuracy(pred, y),
        "balanced_accuracy_day_bootstrap95": _interval(bacc),
        "auc": weighted_auc(score, y),
        "auc_day_bootstrap95": _interval(auc),
        "predicted_1": float(np.mean(pred == 1)),
        "n": n,
    }


def paired_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], y: np.ndarray,
                      days: np.ndarray, seed: int = 0, reps: int = REPS) -> dict:
    """``a`` minus ``b`` (each ``(pred, score)``) in accuracy, balanced accuracy and AUC,
    with paired day-bootstrap 95 % intervals (same draws for both)."""
    inv, draws = _day_draws(days, reps, seed)
    nd = int(inv.max()) + 1
    d = {"accuracy": np.empty(reps), "balanced_accuracy": np.empty(reps), "auc": np.empty(reps)}
    ca, cb = (a[0] == y).astype(np.float64), (b[0] == y).astype(np.float64)
    for r in range(reps):
        w = _weights(inv, draws[r], nd)
        d["accuracy"][r] = np.sum(w * (ca - cb)) / w.sum()
        d["balanced_accuracy"][r] = balanced_accuracy(a[0], y, w) - balanced_accuracy(b[0], y, w)
        d["auc"][r] = weighted_auc(a[1], y, w) - weighted_auc(b[1], y, w)
    point = {
        "accuracy": float(np.mean(ca - cb)),
        "balanced_accuracy": balanced_accuracy(a[0], y) - balanced_accuracy(b[0], y),
        "auc": weighted_auc(a[1], y) - weighted_auc(b[1], y),
    }
    return {k: {"diff": point[k], "day_bootstrap95": _interval(d[k])} for k in point}
