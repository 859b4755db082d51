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


def check_labels(labels, samples: int, output_shape) -> np.ndarray:
    """``labels`` as an integer array checked against the data and the model's output
    ``[C, ...]`` (per sample): one label per sample (or per position for dense outputs),
    each a class in ``0..C-1`` (``0..1`` for one logit). A DataError names what is wrong."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"labels y have dtype {y.dtype}; they must be integer class indices")
    if y.ndim == 0:
        raise DataError("labels y are a single number; give one label per sample")
    if len(y) != samples:
        raise DataError(f"there are {len(y)} labels for {samples} samples; give one label per sample")
    shape = tuple(output_shape or ())
    classes = int(shape[0]) if shape else 1
    classes = 2 if classes == 1 else classes
    if y.shape[1:] != shape[1:]:
        raise DataError(f"labels y have per-sample shape {list(y.shape[1:])}; the model's predictions have {list(shape[1:])}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(
            f"labels y range from {int(y.min())} to {int(y.max())}, but the model predicts {classes} classes (0..{classes - 1}); "
            "check that the labels belong to this model and data"
        )
    return y


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of samples on which two networks' outputs predict the same class."""
    return float(np.mean(predictions(a) == predictions(b)))
