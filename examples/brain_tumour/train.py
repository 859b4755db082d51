"""Train the Br35H tumour classifier and export it (safetensors + ONNX + measured numbers).

    python -m examples.brain_tumour.train     # 30 epochs, ≈ 5 s each on 2 idle CPU cores

Writes ``models/tumour_cnn.{safetensors,onnx,json}``. The ONNX file comes from the legacy
TorchScript exporter (opset 17, dynamic batch) and is checked against torch with
onnxruntime on the test split. Seeded, deterministic algorithms, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from examples.brain_tumour.data import load_splits
from examples.brain_tumour.model import TumourCNN
from examples.common.export import export_onnx
from examples.common.macs import count_macs
from examples.common.study import binary_auc
from examples.fashion_mnist.train import ort_check
from snnc.utils.io import write_json

HERE = Path(__file__).resolve().parent
NAME = "tumour_cnn"


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 4) -> torch.Tensor:
    """Random shift (zero padding ``shift``), horizontal flip and brightness ×[0.8, 1.2] per image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (shift,) * 4)
    offs = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen).tolist()
    x = torch.stack([xp[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs)])
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    return (x * gain).clamp(0, 1)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="OneCycle max learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "models"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    splits = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in load_splits().items()}
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    print(f"train {len(x_tr)}  val {len(x_va)}  test {len(x_te)}", flush=True)

    model = TumourCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * ((len(x_tr) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(x_tr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = F.cross_entropy(model(augment(x_tr[idx], gen)), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        val_acc = float((predict(model, x_va).argmax(1) == y_va).float().mean())
        history.append({"epoch": epoch + 1, "loss": round(total / len(x_tr), 4), "val_accuracy": round(val_acc, 4)})
        print(f"epoch {epoch + 1:2d}  loss {total / len(x_tr):.4f}  val acc {val_acc:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    train_seconds = time.time() - t0

    model.eval()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    st = out_dir / f"{NAME}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st), metadata={"config": json.dumps(model._snnc_config)})
    os.chmod(st, 0o644)
    onnx_path = out_dir / f"{NAME}.onnx"
    export_onnx(model, torch.zeros(2, 1, 64, 64), onnx_path)
    logits = {k: predict(model, x).numpy() for k, (x, _) in splits.items()}
    check = ort_check(str(onnx_path), x_te.numpy(), logits["test"], y_te.numpy())
    report = {
        "model": NAME,
        "config": model._snnc_config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs_per_image": count_macs(model, (1, 1, 64, 64)),
        "recipe": {k: v for k, v in vars(args).items() if k != "out"} | {"optimizer": "AdamW + OneCycleLR", "augmentation": "shift ±4 px, h-flip, brightness ×[0.8,1.2]"},
        "accuracy": {k: float((logits[k].argmax(1) == splits[k][1].numpy()).mean()) for k in splits},
        "roc_auc": {k: binary_auc(logits[k], splits[k][1].numpy()) for k in splits},
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "onnx_check": check,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
    }
    write_json(out_dir / f"{NAME}.json", report)
    print(json.dumps({k: report[k] for k in ("accuracy", "roc_auc", "train_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
