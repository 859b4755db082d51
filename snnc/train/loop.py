"""The fine-tuning loop (:func:`finetune`): see :mod:`snnc.train` for what it computes."""


from __future__ import annotations

import copy
import datetime as _dt
import math
import os
import time
from typing import Any

import numpy as np
import torch

from snnc.backend import resolve_device
from snnc.defaults import (
    DEFAULT_FINETUNE_BATCH,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LR,
    DEFAULT_FINETUNE_PATIENCE,
    DEFAULT_FINETUNE_VAL_FRACTION,
    DEFAULT_SEED,
)
from snnc.errors import DataError
from snnc.ir.executor import check_input
from snnc.ir.graph import Graph, Node
from snnc.metrics import check_labels
from snnc.model import SpikingModel, as_batch, load
from snnc.simulator.budget import check_run_budget
from snnc.train.surrogate import LOSSES, TET_LAMBDA, TET_PHI, TrainingExecutor, loss_fn
from snnc.utils.validate import positive_int, seed_value

DEFAULT_EPOCHS = DEFAULT_FINETUNE_EPOCHS
DEFAULT_LR = DEFAULT_FINETUNE_LR
DEFAULT_BATCH = DEFAULT_FINETUNE_BATCH
DEFAULT_VAL_FRACTION = DEFAULT_FINETUNE_VAL_FRACTION
DEFAULT_PATIENCE = DEFAULT_FINETUNE_PATIENCE


# ------------------------------------------------------------------ the API
def finetune(
    model: SpikingModel | str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    timesteps: int | None = None,
    epochs: int = DEFAULT_EPOCHS,
    loss: str = "tet",
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    patience: int | None = DEFAULT_PATIENCE,
    tet_lambda: float = TET_LAMBDA,
    device: str = "cpu",
    seed: int = DEFAULT_SEED,
    progress=None,
) -> SpikingModel:
    """Fine-tune a converted model's synaptic weights and biases with surrogate gradients and
    BPTT at ``timesteps`` (default: the T it was converted for) on labelled data ``x``, ``y``;
    returns a new :class:`SpikingModel` (``model`` is not changed).

    ``loss``: ``"tet"`` (per-step cross-entropy + λ-weighted MSE, Deng et al. 2022) or ``"ce"``
    (cross-entropy of the time-averaged output). A seeded ``val_fraction`` of the samples
    (0: none) is held out; training stops after ``patience`` epochs without a better
    validation accuracy (None: never early) and keeps the best epoch's weights. The
    provenance's ``finetuned`` record holds the settings, the per-epoch training loss and
    validation accuracy, the best epoch and the time. ``device``: cpu, cuda, cuda:N."""
    sm = model if isinstance(model, SpikingModel) else load(model)
    T = sm.timesteps if timesteps is None else positive_int(timesteps, "timesteps")
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    seed = seed_value(seed)
    if patience is not None:
        patience = positive_int(patience, "patience")
    if loss not in LOSSES:
        raise DataError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    lr = _positive_float(lr, "lr")
    if not (_is_real(tet_lambda) and 0 <= tet_lambda < 1):
        raise DataError(f"tet_lambda must be a number in [0, 1), got {tet_lambda!r}")
    if not (_is_real(val_fraction) and 0 <= val_fraction < 1):
        raise DataError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if progress not in (None, False) and not callable(progress):
        raise DataError(f"progress must be a callable progress(description, total) or None, got {type(progress).__name__}")
    device = resolve_device(device)
    graph = sm.snn
    _check_classifier(graph)
    if y is None:
        raise DataError("fine-tuning needs labels: give y (integer class indices, one per sample; an NPZ file's array y)")
    x = as_batch(x, "training data")
    check_input(graph, x)
    y = check_labels(y, len(x), graph.outputs[0].shape)
    if y.ndim != 1:
        raise DataError(f"labels y must be one class index per sample ([N]), got shape {list(y.shape)}")
    n_val = int(round(val_fraction * len(x)))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    if len(x) - n_val < 1:
        raise DataError(f"{len(x)} sample(s) leave none to train on after holding out {n_val} for validation; give more data or a smaller val_fraction")
    check_run_budget(graph, T, min(batch_size, len(x)), device=device, what="fine-tuning")
    perm = np.random.default_rng(seed).permutation(len(x))
    val_idx, train_idx = np.sort(perm[:n_val]), perm[n_val:]
    x_tr, y_tr, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    snn = graph.clone()
    trainable: dict[int, dict[str, torch.Tensor]] = {}
    tensors: list[tuple[Node, str, torch.Tensor]] = []
    for node in snn.having("synaptic"):
        p = {k: torch.from_numpy(a.copy()).to(device) for k, a in node.params.items()}
        for k in ("weight", "bias"):
            if k in p:
                p[k].requires_grad_(True)
                tensors.append((node, k, p[k]))
        trainable[id(node)] = p
    if not tensors:
        raise DataError("the model has no synaptic op (conv, linear) whose weights could be fine-tuned")
    ex = TrainingExecutor(snn, device, T, trainable)
    params = [t for _, _, t in tensors]
    opt = torch.optim.Adam(params, lr=lr)
    steps_per_epoch = math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, epochs * steps_per_epoch) / (epochs * steps_per_epoch))))
    prog = progress or None

    def validate() -> float | None:
        if n_val == 0:
            return None
        correct = 0
        with torch.no_grad():
            for s in range(0, n_val, batch_size):
                out = ex.forward(torch.from_numpy(x_val[s : s + batch_size]))
                correct += int((out.mean(0).argmax(-1).cpu().numpy() == y_val[s : s + batch_size]).sum())
        return correct / n_val

    history: list[dict[str, Any]] = []
    best_acc = validate()
    best_epoch, best_state, stale, stopped = 0, [t.detach().clone() for t in params], 0, False
    history.append({"epoch": 0, "train_loss": None, "val_accuracy": best_acc, "lr": None, "seconds": round(time.perf_counter() - t0, 3)})
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        task = prog(f"fine-tuning epoch {epoch}/{epochs}", len(x_tr)) if prog else None
        order = torch.randperm(len(x_tr), generator=gen).numpy()
        total, seen = 0.0, 0
        lr_now = opt.param_groups[0]["lr"]
        for s in range(0, len(x_tr), batch_size):
            idx = order[s : s + batch_size]
            xb = torch.from_numpy(x_tr[idx])
            yb = torch.from_numpy(y_tr[idx]).to(device)
            out = ex.forward(xb)
            l = loss_fn(loss, out, yb, tet_lambda)
            if not torch.isfinite(l):
                raise DataError(f"the training loss became {float(l.detach())} at epoch {epoch}; lower the learning rate (lr={lr:g})")
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            sched.step()
            total += float(l.detach()) * len(idx)
            seen += len(idx)
            if task is not None:
                task.advance(len(idx))
        acc = validate()
        history.append({"epoch": epoch, "train_loss": total / seen, "val_accuracy": acc, "lr": lr_now, "seconds": round(time.perf_counter() - t_epoch, 3)})
        if acc is None or acc > best_acc:
            best_acc, best_epoch, stale = acc, epoch, 0
            best_state = [t.detach().clone() for t in params]
        else:
            stale += 1
            if patience is not None and stale >= patience and epoch < epochs:
                stopped = True
                break

    for (node, key, _), value in zip(tensors, best_state):
        node.set_param(key, value.cpu().numpy())
    prov = copy.deepcopy(sm.provenance)
    prov.pop("conversion_check", None)  # measured on the weights before fine-tuning
    prov["timesteps"] = T
    record = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "timesteps": T,
        "loss": loss,
        "tet_lambda": tet_lambda if loss == "tet" else None,
        "tet_phi": TET_PHI if loss == "tet" else None,
        "surrogate": "rectangular: ds/dv = 1/θ on lo+1/2 <= v/θ < K+1/2",
        "trained": "synaptic weight and bias",
        "optimizer": "adam, cosine schedule",
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "epochs_run": len(history) - 1,
        "early_stopped": stopped,
        "patience": patience,
        "best_epoch": best_epoch,
        "val_accuracy": best_acc,
        "val_accuracy_before": history[0]["val_accuracy"],
        "train_samples": int(len(x_tr)),
        "val_samples": int(n_val),
        "seed": seed,
        "device": device,
        "history": history,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    prov["finetuned"] = prov.get("finetuned", []) + [record] if isinstance(prov.get("finetuned"), list) else [record]
    return SpikingModel(snn, sm.ann, prov, sm.ann_reference)


def _check_classifier(graph: Graph) -> int:
    """The number of classes of a single-output classifier ending in a readout; a DataError otherwise."""
    if len(graph.outputs) != 1:
        raise DataError(f"the model has {len(graph.outputs)} outputs; fine-tuning trains single-output classifiers")
    out = graph.outputs[0]
    prod = out.producer
    if prod is None or not prod.spec.has("readout"):
        raise DataError("the model's output does not come from a readout op; fine-tuning needs the per-step outputs a readout integrates (re-create it with `snnc convert`)")
    shape = tuple(out.shape or ())
    if len(shape) != 1 or shape[0] < 2:
        raise DataError(f"the model's output has per-sample shape {list(shape)}; fine-tuning trains classifiers with one logit per class ([C], C >= 2)")
    return int(shape[0])


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v))


def _positive_float(v: Any, name: str) -> float:
    if not _is_real(v) or float(v) <= 0:
        raise DataError(f"{name} must be a positive number, got {v!r}")
    return float(v)
