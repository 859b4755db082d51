"""Train the brain_seg U-Net and export it (safetensors + ONNX + json of measured numbers).

    python -m examples.brain_seg.train [--epochs 20] [--seed 0] [--out examples/brain_seg/models]

Training data: the 60 training slices of :mod:`examples.brain_seg.data`, each at its four
2 x 2 pooling phases (240 images), with random left-right flips. Adam + OneCycleLR,
cross-entropy plus soft Dice loss, batch 16. Seeded, deterministic algorithms, 2 threads.

Writes ``brain_seg_unet.safetensors`` (state_dict, config in metadata), ``brain_seg_unet.onnx``
(legacy TorchScript exporter, opset 17, dynamic batch, checked against onnxruntime) and
``brain_seg_unet.json`` (val/test Dice per class, pixel accuracy, timings, versions).
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

from examples.brain_seg.data import CLASSES, SHAPE, load_split  # noqa: E402
from examples.brain_seg.model import UNet  # noqa: E402
from examples.common.export import export_onnx  # noqa: E402
from examples.common.macs import count_macs  # noqa: E402
from examples.common.study import dice_per_class  # noqa: E402
from examples.common.training import set_determinism  # noqa: E402
from snnc.utils.io import write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "models")
NAME = "brain_seg_unet"
CHANNELS = (8, 16, 32)
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict:
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    d = dice_per_class(out, y, len(CLASSES))
    return {"dice": dict(zip(CLASSES, (round(v, 6) for v in d))), "pixel_accuracy": round(float((out.argmax(1) == y).mean()), 6)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)

    set_determinism(args.seed, args.threads, numpy_seed=True, flush_denormal=True)
    os.makedirs(args.out, exist_ok=True)

    xs, ys = [], []
    for ph in PHASES:
        x, y, _ = load_split("train", ph)
        xs.append(x)
        ys.append(y)
    x_tr, y_tr = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    x_va, y_va, _ = load_split("val")
    x_te, y_te, _ = load_split("test")

    model = UNet(CHANNELS)
    n_params = sum(t.numel() for t in model.parameters())
    macs = count_macs(model, (1, 1, *SHAPE))
    print(f"{NAME}: UNet{CHANNELS} params {n_params} MACs/slice {macs / 1e6:.1f}M, {len(x_tr)} train images, {args.epochs} epochs", flush=True)

    steps = (len(x_tr) + args.batch_size - 1) // args.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        tot = 0.0
        for i in range(0, len(x_tr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # left-right (rows are x)
            xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
            yb = torch.where(flip[:, None, None], yb.flip(1), yb)
            logits = model(xb)
            prob = logits.softmax(1)
            onehot = F.one_hot(yb, len(CLASSES)).permute(0, 3, 1, 2).float()
            inter = (prob * onehot).sum((0, 2, 3))
            soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
            loss = F.cross_entropy(logits, yb) + (1 - soft_dice).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        if (epoch + 1) % 5 == 0 or epoch == 0 or epoch + 1 == args.epochs:
            v = evaluate(model, x_va, y_va)
            print(f"epoch {epoch + 1}/{args.epochs} loss {tot / len(x_tr):.4f} val dice {v['dice']} elapsed {time.time() - t0:.0f}s", flush=True)
    train_time = time.time() - t0

    model.eval()
    val, test = evaluate(model, x_va, y_va), evaluate(model, x_te, y_te)
    print(f"val {val}\ntest {test}\ntraining time {train_time:.0f}s", flush=True)

    from safetensors.torch import save_file

    st_path = os.path.join(args.out, f"{NAME}.safetensors")
    config = {"channels": list(CHANNELS), "in_channels": 1, "num_classes": len(CLASSES)}
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, st_path, metadata={"model": "UNet", "config": json.dumps(config)})
    os.chmod(st_path, 0o644)
    onnx_path = os.path.join(args.out, f"{NAME}.onnx")
    export_onnx(model, torch.zeros(2, 1, *SHAPE), onnx_path)
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    ort = import_onnxruntime()

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x_te)).numpy()
    ort_out = sess.run(None, {"x": x_te})[0]
    ort_odd = sess.run(None, {"x": x_te[:7]})[0]
    ort_check = {
        "max_abs_diff": float(np.abs(ort_out - ref).max()),
        "max_abs_diff_batch7": float(np.abs(ort_odd - ref[:7]).max()),
        "argmax_agree": float((ort_out.argmax(1) == ref.argmax(1)).mean()),
        "ops": sorted({n.op_type for n in onnx.load(onnx_path).graph.node}),
        "bytes": os.path.getsize(onnx_path),
    }
    print(f"onnx: {ort_check}", flush=True)

    info = {
        "name": NAME,
        "model": "UNet",
        "config": config,
        "val": val,
        "test": test,
        "epochs": args.epochs,
        "train_images": len(x_tr),
        "batch_size": args.batch_size,
        "optimizer": f"Adam + OneCycleLR(max_lr={args.lr}); loss cross-entropy + soft Dice",
        "augment": "four 2x2 pooling phases per training slice + random left-right flip",
        "seed": args.seed,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
        "param_count": n_params,
        "macs_per_slice": macs,
        "input": f"float32 [N,1,{SHAPE[0]},{SHAPE[1]}] in [0,1] (MNI152 T1 template, 2 mm), no normalisation",
        "output": f"float32 [N,3,{SHAPE[0]},{SHAPE[1]}] logits (background, grey matter, white matter)",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "files": {"safetensors": f"{NAME}.safetensors", "onnx": f"{NAME}.onnx"},
        "onnx_check": ort_check,
    }
    write_json(os.path.join(args.out, f"{NAME}.json"), info)
    print(f"wrote {args.out}/{NAME}.{{safetensors,onnx,json}}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
