"""Train the window transformer on one target, fit the baselines, export ONNX + safetensors + json.

    python -m examples.stocks_attention.train --target regime
    python -m examples.stocks_attention.train --target direction

Data: :func:`examples.stocks_attention.data.load_target_splits` (the windows of
``examples/stocks``; chronological split by the last label day: train up to 2015-12-31,
validation 2016-2018, test 2019-2022). For ``direction`` the training windows whose
next-day return is exactly 0 are left out of the training loss, as in ``examples/stocks``;
validation and test keep every window.

Training: AdamW, constant learning rate, seeded, deterministic algorithms, 2 threads. The
validation loss is measured ``--evals-per-epoch`` times per epoch; the state with the
lowest validation loss is kept and training stops after ``--patience`` evaluations
without improvement (or after ``--epochs``). No test data is used for any choice.

Baselines, fitted on the same training windows and scored on the same test windows:

* majority class of the training labels (and, for ``direction``, "always up");
* ``regime``: persistence - predict high when this week's realised volatility (days
  t-4 .. t) is above the trailing 63-day volatility; its AUC uses the ratio as the score;
* L2 logistic regression on the flattened [3 x 32] window, and on the window plus its
  squares (volatility is a second moment, which a linear model of x cannot see); C chosen
  on validation log loss.

Every predictor gets accuracy, balanced accuracy and ROC AUC with 95 % day-block bootstrap
intervals, and the model gets paired "model minus baseline" differences (``metrics.py``).

Writes into ``--out`` (default ``examples/stocks_attention/models/``):

* ``<target>.safetensors``   state_dict, constructor config in the metadata key ``config``
* ``<target>.onnx``          legacy exporter (``examples/common/export.py``), opset 17, dynamic batch
* ``<target>_dynamo.onnx``   ``torch.onnx.export(dynamo=True)``, dynamic batch, one self-contained file
* ``<target>.json``          every measured number, baselines, versions

Both ONNX files are checked with onnxruntime against torch on every test window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.common.export import export_dynamo, export_onnx, op_counts, save_safetensors  # noqa: E402
from examples.common.training import batched_forward, minibatches, optimizer_step, set_determinism  # noqa: E402
from examples.stocks.data import CHANNELS, SPLITS, WINDOW  # noqa: E402
from examples.stocks_attention.data import CLASS_NAMES, TARGETS, describe, load_target_splits  # noqa: E402
from examples.stocks_attention.metrics import paired_difference, summarise  # noqa: E402
from examples.stocks_attention.model import DEFAULT_CONFIG, build  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def logits_of(model: torch.nn.Module, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    return batched_forward(model, torch.from_numpy(x), batch).numpy()


def _logreg(xtr, ytr, xva, yva, name: str):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    best = None
    for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        clf = LogisticRegression(C=c, max_iter=1000).fit(xtr, ytr)
        ll = float(log_loss(yva, clf.predict_proba(xva)[:, 1]))
        print(f"{name} C={c:g}: validation log loss {ll:.5f}", flush=True)
        if best is None or ll < best[0]:
            best = (ll, c, clf)
    return best


def baselines(target: str, splits: dict, train_mask: np.ndarray, seed: int) -> tuple[dict, dict]:
    """``(summaries, {name: (pred, score)})`` on the test windows."""
    tr, va, te = splits["train"], splits["val"], splits["test"]
    y, days, n = te["y"], te["label_date"], len(te["y"])
    preds = {}
    info = {}
    maj = int(np.bincount(tr["y"][train_mask]).argmax())
    preds["majority_class_train"] = (np.full(n, maj), np.zeros(n))
    info["majority_class_train"] = {"class": maj}
    if target == "direction":
        preds["always_up"] = (np.ones(n, dtype=np.int64), np.zeros(n))
    if target == "regime":
        r = te["persist_ratio"].astype(np.float64)
        preds["persistence"] = ((r > 1).astype(np.int64), r)
        info["persistence"] = {"rule": "high when std(returns t-4..t) > std(returns t-62..t)"}

    def flat(x, sq):
        f = x.reshape(len(x), -1).astype(np.float64)
        return np.concatenate([f, f * f], 1) if sq else f

    for sq, name in ((False, "logistic_regression"), (True, "logistic_regression_x_and_x2")):
        ll, c, clf = _logreg(flat(tr["x"][train_mask], sq), tr["y"][train_mask], flat(va["x"], sq), va["y"], name)
        p = clf.predict_proba(flat(te["x"], sq))[:, 1]
        preds[name] = ((p > 0.5).astype(np.int64), p)
        info[name] = {"C": c, "val_log_loss": ll, "features": "x and x**2 (192)" if sq else "x (96)"}
    out = {k: {**info.get(k, {}), **summarise(p, s, y, days, seed)} for k, (p, s) in preds.items()}
    return out, preds


def ort_check(path: str, x: np.ndarray, ref: np.ndarray) -> dict:
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    ort = import_onnxruntime()

    onnx.checker.check_model(path, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: x[i : i + 4096]})[0] for i in range(0, len(x), 4096)])
    odd = sess.run(None, {name: x[:7]})[0]
    m = onnx.load(path, load_external_data=False)
    return {
        "file": os.path.basename(path),
        "bytes": os.path.getsize(path),
        "opset": {op.domain or "ai.onnx": op.version for op in m.opset_import},
        "input_shape": [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim],
        "ort_max_abs_diff": float(np.abs(got - ref).max()),
        "ort_max_abs_diff_batch7": float(np.abs(odd - ref[:7]).max()),
        "ort_argmax_agree": float(np.mean(got.argmax(1) == ref.argmax(1))),
        "op_types": op_counts(path),
    }


def export(model: torch.nn.Module, name: str, out_dir: str, x_check: np.ndarray, config: dict) -> dict:
    model.eval()
    st_bytes = save_safetensors(model, os.path.join(out_dir, f"{name}.safetensors"), {"config": json.dumps(config)})
    dummy = torch.zeros(2, len(CHANNELS), WINDOW)
    legacy = os.path.join(out_dir, f"{name}.onnx")
    export_onnx(model, dummy, legacy)
    dyn = os.path.join(out_dir, f"{name}_dynamo.onnx")
    export_dynamo(model, dummy, dyn, static_fallback=False)
    ref = logits_of(model, x_check)
    out = {"safetensors_bytes": st_bytes}
    for key, path in (("onnx_legacy", legacy), ("onnx_dynamo", dyn)):
        r = ort_check(path, x_check, ref)
        out[key] = r
        print(f"{r['file']}: opset {r['opset']} input {r['input_shape']} ORT vs torch max abs diff {r['ort_max_abs_diff']:.3g} "
              f"(batch 7: {r['ort_max_abs_diff_batch7']:.3g}), argmax agree {r['ort_argmax_agree']:.4f}, {r['bytes']} bytes", flush=True)
        print(f"  op types: {r['op_types']}", flush=True)
    return out


def _fmt(s: dict) -> str:
    a, b, u = s["accuracy_day_bootstrap95"], s["balanced_accuracy_day_bootstrap95"], s["auc_day_bootstrap95"]
    return (f"acc {100 * s['accuracy']:.2f} [{100 * a[0]:.2f}, {100 * a[1]:.2f}]  "
            f"bal acc {100 * s['balanced_accuracy']:.2f} [{100 * b[0]:.2f}, {100 * b[1]:.2f}]  "
            f"AUC {s['auc']:.4f} [{u[0]:.4f}, {u[1]:.4f}]  predicted 1: {100 * s['predicted_1']:.1f} %")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, choices=list(TARGETS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--patience", type=int, default=3, help="evaluations without a lower validation loss before stopping")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dim", type=int, default=DEFAULT_CONFIG["dim"])
    p.add_argument("--heads", type=int, default=DEFAULT_CONFIG["heads"])
    p.add_argument("--depth", type=int, default=DEFAULT_CONFIG["depth"])
    p.add_argument("--mlp-dim", type=int, default=DEFAULT_CONFIG["mlp_dim"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "models"))
    args = p.parse_args(argv)

    set_determinism(args.seed, args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.time()

    splits, norm = load_target_splits(args.target)
    tr, va, te = splits["train"], splits["val"], splits["test"]
    train_mask = tr["ret_next"] != 0 if args.target == "direction" else np.ones(len(tr["y"]), dtype=bool)
    x_tr = torch.from_numpy(tr["x"][train_mask])
    y_tr = torch.from_numpy(tr["y"][train_mask])
    print(f"{args.target}: train {len(y_tr)} windows (of {len(tr['y'])}), val {len(va['y'])}, test {len(te['y'])}; "
          f"positive share train {y_tr.float().mean():.4f} val {va['y'].mean():.4f} test {te['y'].mean():.4f}", flush=True)

    config = {**DEFAULT_CONFIG, "dim": args.dim, "heads": args.heads, "depth": args.depth, "mlp_dim": args.mlp_dim}
    model = build(config)
    n_params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    yv = torch.from_numpy(va["y"])
    steps = (len(y_tr) + args.batch_size - 1) // args.batch_size
    eval_at = {round(steps * (k + 1) / args.evals_per_epoch) for k in range(args.evals_per_epoch)}
    history, best, stale, stop = [], None, 0, False
    t0 = time.time()
    for epoch in range(args.epochs):
        tot, seen = 0.0, 0
        model.train()
        for step, idx in enumerate(minibatches(len(y_tr), args.batch_size, gen), 1):
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            optimizer_step(opt, loss)
            tot += loss.item() * len(idx)
            seen += len(idx)
            if step not in eval_at:
                continue
            lv = torch.from_numpy(logits_of(model, va["x"]))
            model.train()
            vloss = F.cross_entropy(lv, yv).item()
            vacc = (lv.argmax(1) == yv).float().mean().item()
            ep = round(epoch + step / steps, 3)
            history.append({"epoch": ep, "train_loss": tot / seen, "val_loss": vloss, "val_accuracy": vacc})
            print(f"epoch {ep:.2f} train loss {tot / seen:.5f} val loss {vloss:.5f} val acc {vacc:.4f} {time.time() - t0:.0f}s", flush=True)
            tot, seen = 0.0, 0
            if best is None or vloss < best[0]:
                best, stale = (vloss, ep, {k: v.clone() for k, v in model.state_dict().items()}), 0
            else:
                stale += 1
                if stale >= args.patience:
                    stop = True
                    break
        if stop:
            print(f"early stop: {args.patience} evaluations without a lower validation loss", flush=True)
            break
    train_time = time.time() - t0
    model.load_state_dict(best[2])
    model.eval()
    print(f"kept epoch {best[1]} (lowest validation loss {best[0]:.5f}); training {train_time:.0f}s", flush=True)
    yval = va["y"]
    val_const = F.cross_entropy(torch.log(torch.tensor([1 - tr["y"][train_mask].mean(), tr["y"][train_mask].mean()]))
                                .expand(len(yval), 2), yv).item()

    lt, lv = logits_of(model, te["x"]), logits_of(model, va["x"])
    y, days = te["y"], te["label_date"]
    m_pred, m_score = lt.argmax(1), (lt[:, 1] - lt[:, 0]).astype(np.float64)
    ann = {
        "val": summarise(lv.argmax(1), (lv[:, 1] - lv[:, 0]).astype(np.float64), yval, va["label_date"], args.seed),
        "test": summarise(m_pred, m_score, y, days, args.seed),
        "test_margin_quantiles": {q: float(np.quantile(np.abs(m_score), float(q))) for q in ("0.01", "0.05", "0.1", "0.25", "0.5")},
    }
    print(f"model     test {_fmt(ann['test'])}", flush=True)
    base, bpred = baselines(args.target, splits, train_mask, args.seed)
    diffs = {}
    for k, v in base.items():
        diffs[k] = paired_difference((m_pred, m_score), bpred[k], y, days, args.seed)
        d = diffs[k]

        def pts(key: str) -> str:
            return f"{100 * d[key]['diff']:+.2f} {np.round(100 * np.array(d[key]['day_bootstrap95']), 2).tolist()}"

        print(f"baseline {k}: test {_fmt(v)}", flush=True)
        print(f"   model minus {k}: acc {pts('accuracy')} AUC {d['auc']['diff']:+.4f} {np.round(d['auc']['day_bootstrap95'], 4).tolist()} "
              f"bal acc {pts('balanced_accuracy')}", flush=True)

    exports = export(model, args.target, args.out, te["x"], config)
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    onnxruntime = import_onnxruntime()
    import sklearn

    info = {
        "name": args.target,
        "model": "WindowTransformer (examples/stocks_attention/model.py)",
        "target": args.target,
        "classes": list(CLASS_NAMES[args.target]),
        "config": config,
        "param_count": n_params,
        "input": f"float32 [N, {len(CHANNELS)}, {WINDOW}]: {', '.join(CHANNELS)} (examples/stocks/data.py), "
                 "standardised with train statistics",
        "normalisation": norm,
        "splits": {k: {"last_label_day_in": list(v)} for k, v in SPLITS.items()},
        "data": describe(splits),
        "train_windows_used": int(train_mask.sum()),
        "max_epochs": args.epochs,
        "evals_per_epoch": args.evals_per_epoch,
        "patience": args.patience,
        "kept_epoch": best[1],
        "val_loss_kept": best[0],
        "val_loss_constant_train_prior": val_const,
        "history": history,
        "optimizer": f"AdamW(lr={args.lr}, weight_decay={args.weight_decay}), constant lr, batch {args.batch_size}",
        "seed": args.seed,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
        "total_time_s": round(time.time() - t_all, 1),
        "ann": ann,
        "baselines": base,
        "model_minus_baseline_test": diffs,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "sklearn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version()},
        **exports,
    }
    from snnc.utils.io import write_json

    write_json(os.path.join(args.out, f"{args.target}.json"), info)
    print(f"wrote {args.out}/{args.target}.{{safetensors,onnx,json}} and {args.target}_dynamo.onnx "
          f"in {time.time() - t_all:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
