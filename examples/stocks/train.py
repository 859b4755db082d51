"""Train the stock-direction TCN, fit the baselines, export ONNX + safetensors + json.

    python -m examples.stocks.train [--epochs 8] [--seed 0] [--out examples/stocks/models]

Data: :func:`examples.stocks.data.load_splits` (the skfolio CSVs; train label days up to
2015-12-31, validation 2016-2018, test 2019-2022). Training windows whose next-day return
is exactly 0 (flat, mostly a rounding artefact of the early-1990s prices) are left out of
the training loss; validation and test keep every window (a flat day is label 0).

The epoch with the lowest validation loss is kept (no test data is used for any choice).
Baselines, fitted on the same training windows and scored on the same test windows:
majority class of the training labels, "always up", and an L2 logistic regression on the
flattened [3 x 32] window (C chosen on validation). Every accuracy comes with a 95 %
Wilson interval and a 95 % day-block bootstrap interval (see ``stats.py``).

Writes ``stocks_tcn.safetensors`` (state_dict), ``stocks_tcn.onnx`` (legacy exporter,
opset 17, dynamic batch; checked with onnxruntime) and ``stocks_tcn.json`` (measured numbers).
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

from examples.common.export import export_onnx  # noqa: E402
from examples.stocks.data import CHANNELS, SPLITS, WINDOW, describe, load_splits  # noqa: E402
from examples.stocks.model import StocksTCN  # noqa: E402
from examples.stocks.stats import summarise  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "stocks_tcn"


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    model.eval()
    xt = torch.from_numpy(x)
    return torch.cat([model(xt[i : i + batch]) for i in range(0, len(xt), batch)]).numpy()


def baselines(splits: dict, train_mask: np.ndarray, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    tr, va, te = splits["train"], splits["val"], splits["test"]
    out = {}
    maj = int(np.bincount(tr["y"]).argmax())
    out["majority_class_train"] = {"class": maj, **summarise(np.full(len(te["y"]), maj), te["y"], te["label_date"], seed)}
    out["always_up"] = summarise(np.ones(len(te["y"]), dtype=np.int64), te["y"], te["label_date"], seed)
    xtr = tr["x"][train_mask].reshape(int(train_mask.sum()), -1)
    ytr = tr["y"][train_mask]
    best = None
    for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        clf = LogisticRegression(C=c, max_iter=500).fit(xtr, ytr)
        acc = float(np.mean(clf.predict(va["x"].reshape(len(va["x"]), -1)) == va["y"]))
        print(f"logistic regression C={c:g}: validation accuracy {acc:.4f}", flush=True)
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    acc_val, c, clf = best
    pred = clf.predict(te["x"].reshape(len(te["x"]), -1))
    out["logistic_regression"] = {"C": c, "val_accuracy": acc_val, **summarise(pred, te["y"], te["label_date"], seed)}
    return out


def export(model: torch.nn.Module, out_dir: str, x_check: np.ndarray, config: dict) -> dict:
    from snnc.frontends.onnx.reference import import_onnxruntime

    ort = import_onnxruntime()
    from safetensors.torch import save_file

    model.eval()
    st = os.path.join(out_dir, f"{NAME}.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, st, metadata={"config": json.dumps(config)})
    os.chmod(st, 0o644)
    path = os.path.join(out_dir, f"{NAME}.onnx")
    export_onnx(model, torch.zeros(2, len(CHANNELS), WINDOW), path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = logits_of(model, x_check)
    got = np.concatenate([sess.run(None, {"x": x_check[i : i + 4096]})[0] for i in range(0, len(x_check), 4096)])
    odd = sess.run(None, {"x": x_check[:7]})[0]
    r = {
        "onnx_bytes": os.path.getsize(path),
        "safetensors_bytes": os.path.getsize(st),
        "ort_max_abs_diff": float(np.abs(got - ref).max()),
        "ort_max_abs_diff_batch7": float(np.abs(odd - ref[:7]).max()),
        "ort_argmax_agree": float(np.mean(got.argmax(1) == ref.argmax(1))),
    }
    print(f"{path}: ORT vs torch max abs diff {r['ort_max_abs_diff']:.3g}, argmax agree {r['ort_argmax_agree']:.4f}", flush=True)
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--cap", type=float, default=2.0, help="ReLU ceiling (Clip(x, 0, cap)); see model.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "models"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.time()

    splits, norm = load_splits()
    tr, va, te = splits["train"], splits["val"], splits["test"]
    train_mask = tr["ret_next"] != 0
    x_tr = torch.from_numpy(tr["x"][train_mask])
    y_tr = torch.from_numpy(tr["y"][train_mask])
    print(f"train {len(y_tr)} windows (of {len(tr['y'])}; flat next days left out), val {len(va['y'])}, test {len(te['y'])}", flush=True)

    config = {"c1": 32, "c2": 32, "cap": args.cap}
    model = StocksTCN(**config)
    n_params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    yv = torch.from_numpy(va["y"])
    history, best = [], None
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y_tr), generator=gen)
        tot, seen = 0.0, 0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            seen += len(idx)
        lv = torch.from_numpy(logits_of(model, va["x"]))
        vloss = F.cross_entropy(lv, yv).item()
        vacc = (lv.argmax(1) == yv).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": tot / seen, "val_loss": vloss, "val_accuracy": vacc})
        print(
            f"epoch {epoch + 1}/{args.epochs} train loss {tot / seen:.5f} val loss {vloss:.5f} val acc {vacc:.4f} "
            f"{time.time() - t0:.0f}s",
            flush=True,
        )
        if best is None or vloss < best[0]:
            best = (vloss, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
    train_time = time.time() - t0
    model.load_state_dict(best[2])
    print(f"kept epoch {best[1]} (lowest validation loss {best[0]:.5f})", flush=True)

    lt = logits_of(model, te["x"])
    lv = logits_of(model, va["x"])
    margin = np.abs(lt[:, 1] - lt[:, 0])
    ann = {
        "val": summarise(lv.argmax(1), va["y"], va["label_date"], args.seed),
        "test": summarise(lt.argmax(1), te["y"], te["label_date"], args.seed),
        "test_margin_quantiles": {q: float(np.quantile(margin, float(q))) for q in ("0.01", "0.05", "0.1", "0.25", "0.5", "0.75")},
    }
    print(f"ANN test accuracy {ann['test']['accuracy']:.4f} wilson {ann['test']['wilson95']} "
          f"day-bootstrap {ann['test']['day_bootstrap95']}, "
          f"predicted up {ann['test']['predicted_up']:.3f}", flush=True)
    base = baselines(splits, train_mask, args.seed)
    for k, v in base.items():
        print(f"baseline {k}: test accuracy {v['accuracy']:.4f} wilson {v['wilson95']} day-bootstrap {v['day_bootstrap95']}", flush=True)

    exports = export(model, args.out, te["x"], config)
    info = {
        "name": NAME,
        "model": "StocksTCN",
        "config": config,
        "param_count": n_params,
        "input": f"float32 [N, {len(CHANNELS)}, {WINDOW}]: {', '.join(CHANNELS)} (see data.py), standardised with train statistics",
        "normalisation": norm,
        "splits": {k: {"label_days": list(v)} for k, v in SPLITS.items()},
        "data": describe(splits),
        "train_windows_used": int(train_mask.sum()),
        "epochs": args.epochs,
        "kept_epoch": best[1],
        "history": history,
        "optimizer": f"AdamW(lr={args.lr}, weight_decay={args.weight_decay}), constant lr, batch {args.batch_size}",
        "seed": args.seed,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
        "total_time_s": round(time.time() - t_all, 1),
        "ann": ann,
        "baselines": base,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **exports,
    }
    from snnc.utils.io import write_json

    write_json(os.path.join(args.out, f"{NAME}.json"), info)
    print(f"wrote {args.out}/{NAME}.{{safetensors,onnx,json}} in {time.time() - t_all:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
