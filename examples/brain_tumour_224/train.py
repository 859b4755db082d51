"""Train a torchvision-style ResNet-18 (1 grey channel, 2 classes) on Br35H at 224×224 and export it.

    python -m examples.brain_tumour_224.train --time-batches 50   # measure seconds per batch, then stop
    python -m examples.brain_tumour_224.train                     # train, keep the best validation epoch, export

Progressive resizing: 8 epochs of AdamW + OneCycle, the first 5 on 2×2 average-pooled images
(112², ≈ 3× cheaper; augmentation at 224² then pooled), the last 3 at 224²; validation always at
224². 866 s on the 2 cores.
Writes ``models/tumour_resnet18_224.{onnx,json}`` (the ONNX file holds the weights; no
safetensors copy). Legacy TorchScript exporter, opset 17, dynamic batch; checked against torch
with onnxruntime on the test split. Seeded, deterministic algorithms, 2 threads.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from examples.brain_tumour.train import augment
from examples.brain_tumour_224.data import DATA_DIR, cached_splits
from examples.common.export import export_onnx
from examples.common.imagenet import resnet18
from examples.common.macs import count_macs
from examples.common.study import binary_auc
from examples.fashion_mnist.train import ort_check
from snnc.utils.io import write_json

HERE = Path(__file__).resolve().parent
NAME = "tumour_resnet18_224"
SIZE = 224


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--low-epochs", type=int, default=5, help="the first LOW_EPOCHS epochs train on 2x2 average-pooled images (112x112)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="OneCycle max learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--shift", type=int, default=16, help="augmentation: random shift of ±SHIFT px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(DATA_DIR), help="folder of examples.brain_tumour_224.data's .npz files")
    p.add_argument("--time-batches", type=int, default=0, help="only time this many training batches and exit")
    p.add_argument("--out", default=str(HERE / "models"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    splits = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in cached_splits(args.data).items()}
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    print(f"train {len(x_tr)}  val {len(x_va)}  test {len(x_te)}", flush=True)

    model = resnet18(num_classes=2, in_channels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    per_epoch = (len(x_tr) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    history: list[dict] = []
    best: tuple[float, int, dict] = (-1.0, 0, {})
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total, seen = 0.0, 0
        t_first = time.time()  # reset after the first batch (warm-up)
        for b, i in enumerate(range(0, len(x_tr), args.batch_size)):
            if args.time_batches and b == args.time_batches:
                s = (time.time() - t_first) / (b - 1)
                print(f"{s:.2f} s per batch of {args.batch_size} (batches 2..{b}) -> {s * per_epoch:.0f} s per epoch of {len(x_tr)} images")
                return 0
            if b == 1:
                t_first = time.time()
            idx = perm[i : i + args.batch_size]
            xb = augment(x_tr[idx], gen, args.shift)
            if epoch < args.low_epochs:  # progressive resizing: cheap low-resolution epochs first
                xb = F.avg_pool2d(xb, 2)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        val_out = predict(model, x_va)
        val_acc = float((val_out.argmax(1) == y_va).float().mean())
        val_auc = binary_auc(val_out.numpy(), y_va.numpy())
        history.append(
            {"epoch": epoch + 1, "size": SIZE // 2 if epoch < args.low_epochs else SIZE, "loss": round(total / seen, 4), "val_accuracy": round(val_acc, 4), "val_auc": round(val_auc, 4), "seconds": round(time.time() - t0, 1)}
        )
        print(f"epoch {epoch + 1:2d}  loss {total / seen:.4f}  val acc {val_acc:.4f}  auc {val_auc:.4f}  ({time.time() - t0:.0f} s)", flush=True)
        if val_acc >= best[0]:  # ties: the later (more annealed) epoch
            best = (val_acc, epoch + 1, copy.deepcopy(model.state_dict()))
    train_seconds = time.time() - t0
    model.load_state_dict(best[2])
    model.eval()

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{NAME}.onnx"
    export_onnx(model, torch.zeros(2, 1, SIZE, SIZE), onnx_path)
    os.chmod(onnx_path, 0o644)
    logits = {k: predict(model, x).numpy() for k, (x, _) in splits.items()}
    check = ort_check(str(onnx_path), x_te.numpy(), logits["test"], y_te.numpy())
    report = {
        "model": NAME,
        "architecture": "examples.common.imagenet.resnet18(num_classes=2, in_channels=1)",
        "input": [1, SIZE, SIZE],
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs_per_image": count_macs(model, (1, 1, SIZE, SIZE)),
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "data", "time_batches")}
        | {"optimizer": "AdamW + OneCycleLR", "augmentation": f"shift ±{args.shift} px, h-flip, brightness ×[0.8,1.2]", "kept": f"best validation accuracy ({SIZE}², ties: later epoch)",
           "progressive": f"epochs 1-{args.low_epochs} on 2×2 average-pooled images ({SIZE // 2}²), then {SIZE}²"},
        "best_epoch": best[1],
        "accuracy": {k: float((logits[k].argmax(1) == splits[k][1].numpy()).mean()) for k in splits},
        "roc_auc": {k: binary_auc(logits[k], splits[k][1].numpy()) for k in splits},
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "onnx_check": check,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), {args.threads} threads",
    }
    write_json(out_dir / f"{NAME}.json", report)
    print(json.dumps({k: report[k] for k in ("best_epoch", "accuracy", "roc_auc", "train_seconds")}, indent=1))
    print(f"onnx: {check['bytes'] / 1e6:.1f} MB, max |Δ| vs torch {check['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
