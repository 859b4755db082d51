"""Train the small ViT on Fashion-MNIST and export it (safetensors + two ONNX files).

    python -m examples.vit_fashion_mnist.train                   # train + export everything
    python -m examples.vit_fashion_mnist.train --time-batches 30 # only time training batches
    python -m examples.vit_fashion_mnist.train --encoder-only    # only (re)export encoder_vit*

Writes into ``--out`` (default ``examples/vit_fashion_mnist/models/``):

* ``vit.safetensors``    weights (state_dict, no pickle), constructor config in metadata
* ``vit.onnx``           legacy TorchScript exporter, opset 17, dynamic batch
* ``vit_dynamo.onnx``    torch.export-based (dynamo) exporter, dynamic batch
* ``vit.json``           measured test accuracies (torch and onnxruntime, full 10k test set),
                         training time, recipe, versions
* ``encoder_vit.{safetensors,onnx,json}``, ``encoder_vit_dynamo.onnx``: the same ViT
  built from ``nn.TransformerEncoder`` (depth 2), *untrained* (seeded random init), for
  import tests; both ONNX files are checked against torch with onnxruntime.

All ONNX files are self-contained (no external data).  Training is seeded and uses
deterministic algorithms with 2 CPU threads.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `examples.*` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.common.export import export_dynamo, export_onnx, op_counts, save_safetensors  # noqa: E402
from examples.common.macs import count_macs  # noqa: E402
from examples.common.training import batched_forward, set_determinism, train_epoch  # noqa: E402
from examples.fashion_mnist.data import load_fashion_mnist  # noqa: E402
from examples.fashion_mnist.train import augment, ort_check, ort_summary  # noqa: E402
from examples.vit_fashion_mnist.model import (  # noqa: E402
    NUM_PATCHES,
    build_encoder_vit,
    build_vit,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "models")


def attention_macs(config: dict) -> int:
    """MACs of ``q @ k^T`` and ``attn @ v`` per image (``count_macs`` only sees Conv/Linear)."""
    n = NUM_PATCHES + 1
    return config["depth"] * 2 * n * n * config["dim"]


def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return batched_forward(model, x, batch)


def export_all(model: torch.nn.Module, name: str, out_dir: str, x_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """Write ``<name>.safetensors``, ``<name>.onnx`` (legacy, opset 17) and
    ``<name>_dynamo.onnx``; check both ONNX files with onnxruntime on ``x_test``."""
    model = model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    metadata = {"model": name, "config": json.dumps(model._snnc_config)}
    results: dict = {"safetensors_bytes": save_safetensors(model, os.path.join(out_dir, f"{name}.safetensors"), metadata)}

    legacy = os.path.join(out_dir, f"{name}.onnx")
    export_onnx(model, dummy, legacy)
    dyn = os.path.join(out_dir, f"{name}_dynamo.onnx")
    dyn_note = export_dynamo(model, dummy, dyn)

    ref = predict(model, x_test).numpy()
    xn, yn = x_test.numpy(), y_test.numpy()
    for key, path in (("onnx_legacy", legacy), ("onnx_dynamo", dyn)):
        r = ort_check(path, xn, ref, yn)
        r["file"] = os.path.basename(path)
        r["test_images"] = len(xn)
        r["op_types"] = op_counts(path)
        results[key] = r
        print(ort_summary(r), flush=True)
        print(f"  op types: {r['op_types']}", flush=True)
        if r["argmax_agree"] < 0.999 or r["max_abs_diff"] > 1e-3:
            raise RuntimeError(f"{path}: onnxruntime disagrees with torch ({r})")
    results["onnx_dynamo"]["note"] = dyn_note
    return results


def versions() -> dict:
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    onnxruntime = import_onnxruntime()

    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:  # pragma: no cover
        onnxscript_version = None
    return {
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "onnxscript_version": onnxscript_version,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} logical CPUs",
    }


def export_encoder_vit(out_dir: str, x_test: torch.Tensor, y_test: torch.Tensor, seed: int = 0) -> dict:
    """Export the untrained ``nn.TransformerEncoder`` ViT (seeded init) as
    ``encoder_vit.{safetensors,onnx,json}`` and ``encoder_vit_dynamo.onnx``."""
    torch.manual_seed(seed)
    model = build_encoder_vit().eval()
    # The init leaves biases at 0 and LayerNorm affines at 1/0, which exporters deduplicate and
    # which would hide mix-ups between tensors in an importer: give every 1-d parameter its own
    # small random values.
    with torch.no_grad():
        for t in model.parameters():
            if t.ndim == 1:
                t.add_(torch.randn_like(t) * 0.05)
    cfg = model._snnc_config
    n_params = sum(t.numel() for t in model.parameters())
    print(f"encoder_vit: {cfg} params {n_params} (untrained, seed {seed})", flush=True)
    exports = export_all(model, "encoder_vit", out_dir, x_test, y_test)
    info = {
        "name": "encoder_vit",
        "model": "EncoderViT (nn.TransformerEncoder, norm_first=True, activation='gelu', dropout=0.0, batch_first=True)",
        "config": {k: v for k, v in cfg.items() if k != "model"},
        "trained": False,
        "init_seed": seed,
        "note": (
            "random weights (seeded trunc-normal init, then N(0, 0.05) noise added to every bias and "
            "LayerNorm weight/bias): accuracies are chance level; the files exist for ONNX import tests"
        ),
        "param_count": n_params,
        "input": "float32 [N,1,28,28] in [0,1], no normalisation",
        **versions(),
        "files": {
            "safetensors": "encoder_vit.safetensors",
            "onnx_legacy": "encoder_vit.onnx",
            "onnx_dynamo": "encoder_vit_dynamo.onnx",
        },
        **exports,
    }
    with open(os.path.join(out_dir, "encoder_vit.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


def cosine_with_warmup(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine decay to 0")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--no-augment", action="store_true", help="disable random crop (pad 2) + horizontal flip")
    p.add_argument("--config", default=None, help="JSON dict overriding the ViT config, e.g. '{\"depth\": 6}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (smoke tests)")
    p.add_argument("--time-batches", type=int, default=0, help="only time this many training batches and exit")
    p.add_argument("--encoder-only", action="store_true", help="only export the untrained encoder_vit files")
    p.add_argument("--no-encoder", action="store_true", help="do not export the encoder_vit files")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)

    set_determinism(args.seed, args.threads, numpy_seed=True, flush_denormal=True)
    os.makedirs(args.out, exist_ok=True)

    x_te, y_te = (torch.from_numpy(a) for a in load_fashion_mnist("test"))
    if args.encoder_only:
        export_encoder_vit(args.out, x_te, y_te, seed=args.seed)
        print(f"wrote {args.out}/encoder_vit.{{safetensors,onnx,json}} and encoder_vit_dynamo.onnx", flush=True)
        return 0

    x_tr, y_tr = (torch.from_numpy(a) for a in load_fashion_mnist("train"))
    if args.train_limit:
        x_tr, y_tr = x_tr[: args.train_limit], y_tr[: args.train_limit]

    model = build_vit(json.loads(args.config) if args.config else None)
    config = {k: v for k, v in model._snnc_config.items() if k != "model"}
    n_params = sum(t.numel() for t in model.parameters())
    macs = count_macs(model, (1, 1, 28, 28)) + attention_macs(config)
    print(f"vit: {config} params {n_params} MACs/img {macs / 1e6:.2f}M, {args.epochs} epochs", flush=True)

    steps_per_epoch = (len(x_tr) + args.batch_size - 1) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    # no weight decay on biases, LayerNorm weights, cls token and position embedding
    decay = [t for n, t in model.named_parameters() if t.ndim >= 2 and n not in ("cls_token", "pos_embed")]
    no_decay = [t for n, t in model.named_parameters() if not (t.ndim >= 2 and n not in ("cls_token", "pos_embed"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warmup = max(1, round(args.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(warmup, total_steps))
    gen = torch.Generator().manual_seed(args.seed)
    loss_fn = functools.partial(F.cross_entropy, label_smoothing=args.label_smoothing)
    transform = None if args.no_augment else functools.partial(augment, gen=gen)

    t0, c0 = time.time(), time.process_time()
    step = 0
    history = []
    for epoch in range(args.epochs):
        remaining = args.time_batches - step if args.time_batches else None
        loss, acc, done = train_epoch(
            model, x_tr, y_tr, opt, gen, args.batch_size, sched=sched, loss_fn=loss_fn, transform=transform, max_steps=remaining
        )
        step += done
        if args.time_batches and step == args.time_batches:
            dt = time.time() - t0
            print(
                f"{step} batches in {dt:.1f}s: {dt / step:.3f}s/batch, "
                f"~{dt / step * steps_per_epoch:.0f}s/epoch",
                flush=True,
            )
            return 0
        elapsed = time.time() - t0
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), "train_acc": round(acc, 5), "elapsed_s": round(elapsed, 1)})
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} train acc {acc:.4f} elapsed {elapsed:.0f}s", flush=True)
    train_time = time.time() - t0
    train_cpu = time.process_time() - c0

    pred = predict(model, x_te).argmax(1)
    acc_full = (pred == y_te).float().mean().item()
    acc_2000 = (pred[:2000] == y_te[:2000]).float().mean().item()
    print(
        f"test acc: full 10k {acc_full:.4f}, first 2000 {acc_2000:.4f}; "
        f"training time {train_time:.0f}s wall, {train_cpu:.0f}s CPU",
        flush=True,
    )

    exports = export_all(model, "vit", args.out, x_te, y_te)

    info = {
        "name": "vit",
        "model": "ViT (timm-style: PatchEmbed conv7x7/s7, cls token, pos embed, pre-LN blocks, LayerNorm, head on cls)",
        "config": config,
        "test_accuracy_10k": round(acc_full, 6),
        "test_accuracy_first2000": round(acc_2000, 6),
        "epochs": args.epochs,
        "train_images": len(x_tr),
        "batch_size": args.batch_size,
        "optimizer": (
            f"AdamW(lr={args.lr}, weight_decay={args.weight_decay} on weight matrices only) + "
            f"linear warm-up {args.warmup_epochs} epoch(s) + cosine decay per step"
        ),
        "label_smoothing": args.label_smoothing,
        "augment": None if args.no_augment else "random crop (zero pad 2) + horizontal flip",
        "seed": args.seed,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
        "train_cpu_time_s": round(train_cpu, 1),
        "train_time_note": "train_time_s is wall time; train_cpu_time_s is this process's CPU time summed over its threads",
        "history": history,
        "param_count": n_params,
        "macs_per_image": macs,
        "input": "float32 [N,1,28,28] in [0,1], no normalisation",
        **versions(),
        "files": {"safetensors": "vit.safetensors", "onnx_legacy": "vit.onnx", "onnx_dynamo": "vit_dynamo.onnx"},
        **exports,
    }
    with open(os.path.join(args.out, "vit.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}/vit.{{safetensors,onnx,json}} and vit_dynamo.onnx", flush=True)

    if not args.no_encoder:
        export_encoder_vit(args.out, x_te, y_te, seed=args.seed)
        print(f"wrote {args.out}/encoder_vit.{{safetensors,onnx,json}} and encoder_vit_dynamo.onnx", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
