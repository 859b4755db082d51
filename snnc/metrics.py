"""Scores of network outputs: predicted classes, accuracy, agreement (no heavy imports)."""

from __future__ import annotations

import numpy as np

from snnc.errors import DataError


def predictions(out: np.ndarray) -> np.ndarray:
    """Predicted classes: the argmax over axis 1; one logit (``[N]`` or ``[N, 1, ...]``) is a
    binary decision, positive = class 1."""
    if out.ndim == 1:
        return (out > 0).astype(np.int64)
    if out.shape[1] == 1:
        return (out[:, 0] > 0).astype(np.int64)
    return out.argmax(axis=1)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of predictions equal to ``labels``."""
    pred = predictions(outputs)
    if pred.shape != labels.shape:
        raise DataError(f"labels y have shape {list(labels.shape)} but the model's predictions have shape {list(pred.shape)}")
    return float(np.mean(pred == labels))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of samples on which two networks' outputs predict the same class."""
    return float(np.mean(predictions(a) == predictions(b)))
