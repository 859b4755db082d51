"""Train a Fashion-MNIST example model and export it (safetensors + ONNX).

    python -m examples.fashion_mnist.train --model vgg_bn
    python examples/fashion_mnist/train.py --model resnet --epochs 12

Writes into ``--out`` (default ``examples/fashion_mnist/models/``):

* ``<name>.safetensors``  weights (state_dict, no pickle), config in metadata
* ``<name>.onnx``         legacy TorchScript exporter, opset 17, dynamic batch
* ``<name>_dynamo.onnx``  torch.export-based (dynamo) exporter, dynamic batch
* ``<name>.json``         measured accuracies, training time, versions, ...

Both ONNX files are self-contained (no external data) and are checked with
onnxruntime against the torch model.  Training is seeded and uses
deterministic algorithms with 2 CPU threads; results are reproducible on the
same machine / torch build.
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

if __package__ in (None, ""):  # run as a script: make `examples.fashion_mnist` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.fashion_mnist.data import load_fashion_mnist  # noqa: E402
from examples.common.export import export_dynamo, export_onnx, save_safetensors  # noqa: E402
from examples.common.macs import count_macs  # noqa: E402
from examples.common.training import set_determinism, train_epoch  # noqa: E402
from examples.fashion_mnist.models import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "models")

# Default training recipe per model (chosen to finish in < ~10 min on 2 CPU cores).
DEFAULTS = {
    "vgg_bn": {"epochs": 7, "config": {"widths": [24, 48, 96]}},
    "resnet": {"epochs": 12, "config": {"stem_channels": 16, "stages": [[16, 1], [32, 2], [64, 2]]}},
    # stages: (expansion, width, blocks, stride) per stage
    "mobilenet": {"epochs": 6, "config": {"stem_channels": 16, "stages": [[1, 16, 1, 1], [4, 24, 2, 2], [4, 32, 3, 2]], "head_channels": 128}},
}


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip (per image)."""
    n, _, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
        x = torch.stack([xp[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs)])
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    outs = [model(x[i : i + batch].contiguous(memory_format=torch.channels_last)) for i in range(0, len(x), batch)]
    return torch.cat(outs)


def ort_check(path: str, x: np.ndarray, ref: np.ndarray, y: np.ndarray) -> dict:
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    ort = import_onnxruntime()

    onnx.checker.check_model(path, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    outs = [sess.run(None, {in_name: x[i : i + 500]})[0] for i in range(0, len(x), 500)]
    out = np.concatenate(outs)
    # a batch of a different size exercises the dynamic batch dimension
    odd = sess.run(None, {in_name: x[:7]})[0]
    m = onnx.load(path, load_external_data=False)
    return {
        "max_abs_diff": float(np.abs(out - ref).max()),
        "max_abs_diff_batch7": float(np.abs(odd - ref[:7]).max()),
        "argmax_agree": float((out.argmax(1) == ref.argmax(1)).mean()),
        "accuracy": float((out.argmax(1) == y).mean()),
        "opset": {op.domain or "ai.onnx": op.version for op in m.opset_import},
        "input_shape": [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim],
        "bytes": os.path.getsize(path),
    }


def ort_summary(r: dict) -> str:
    """One line of an :func:`ort_check` result that has its ``file`` set."""
    return (
        f"{r['file']}: opset {r['opset']} input {r['input_shape']} "
        f"ORT vs torch max abs diff {r['max_abs_diff']:.3g} (batch 7: {r['max_abs_diff_batch7']:.3g}), "
        f"argmax agree {r['argmax_agree']:.4f}, ORT acc {r['accuracy']:.4f}, {r['bytes']} bytes"
    )


def export_all(model, name: str, out_dir: str, x_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    model = model.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(2, 1, 28, 28)
    results = {}

    metadata = {"model": name, "config": json.dumps(model._snnc_config)}
    results["safetensors_bytes"] = save_safetensors(model, os.path.join(out_dir, f"{name}.safetensors"), metadata)

    legacy = os.path.join(out_dir, f"{name}.onnx")
    export_onnx(model, dummy, legacy)

    dyn = os.path.join(out_dir, f"{name}_dynamo.onnx")
    dyn_note = export_dynamo(model, dummy, dyn)

    with torch.no_grad():
        ref = model(x_test).numpy()
    xn, yn = x_test.numpy(), y_test.numpy()
    for key, path in (("onnx_legacy", legacy), ("onnx_dynamo", dyn)):
        try:
            r = ort_check(path, xn, ref, yn)
        except Exception as e:
            if key == "onnx_dynamo" and dyn_note == "dynamic batch":
                raise
            raise RuntimeError(f"onnxruntime check of {path} failed: {e}") from e
        r["file"] = os.path.basename(path)
        results[key] = r
        print(ort_summary(r), flush=True)
    results["onnx_dynamo"]["note"] = dyn_note
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULTS), required=True)
    p.add_argument("--name", default=None, help="output basename (default: the model name)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=4e-3, help="OneCycle max learning rate (Adam)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--no-augment", action="store_true", help="disable random crop (pad 2) + horizontal flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (smoke tests)")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)

    set_determinism(args.seed, args.threads, numpy_seed=True, flush_denormal=True)

    name = args.name or args.model
    epochs = args.epochs if args.epochs is not None else DEFAULTS[args.model]["epochs"]
    config = DEFAULTS[args.model]["config"]
    os.makedirs(args.out, exist_ok=True)

    x_tr, y_tr = (torch.from_numpy(a) for a in load_fashion_mnist("train"))
    x_te, y_te = (torch.from_numpy(a) for a in load_fashion_mnist("test"))
    if args.train_limit:
        x_tr, y_tr = x_tr[: args.train_limit], y_tr[: args.train_limit]

    model = build_model(args.model, **config)
    model._snnc_config = {"model": args.model, **config}
    n_params = sum(t.numel() for t in model.parameters())
    macs = count_macs(model, (1, 1, 28, 28))
    print(f"{name}: {args.model} {config} params {n_params} MACs/img {macs / 1e6:.2f}M, {epochs} epochs", flush=True)
    model = model.to(memory_format=torch.channels_last)

    steps_per_epoch = (len(x_tr) + args.batch_size - 1) // args.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        if not args.no_augment:
            xb = augment(xb, gen)
        return xb.contiguous(memory_format=torch.channels_last)

    t0 = time.time()
    for epoch in range(epochs):
        loss, acc, _ = train_epoch(model, x_tr, y_tr, opt, gen, args.batch_size, sched=sched, transform=prepare)
        print(f"epoch {epoch + 1}/{epochs} loss {loss:.4f} train acc {acc:.4f} elapsed {time.time() - t0:.0f}s", flush=True)
    train_time = time.time() - t0

    pred = predict(model, x_te).argmax(1)
    acc_full = (pred == y_te).float().mean().item()
    acc_2000 = (pred[:2000] == y_te[:2000]).float().mean().item()
    print(f"test acc: full 10k {acc_full:.4f}, first 2000 {acc_2000:.4f}; training time {train_time:.0f}s", flush=True)

    exports = export_all(model, name, args.out, x_te[:2000].contiguous(), y_te[:2000])

    info = {
        "name": name,
        "model": args.model,
        "config": config,
        "test_accuracy_10k": round(acc_full, 6),
        "test_accuracy_first2000": round(acc_2000, 6),
        "epochs": epochs,
        "train_images": len(x_tr),
        "batch_size": args.batch_size,
        "optimizer": f"Adam(weight_decay={args.weight_decay}) + OneCycleLR(max_lr={args.lr})",
        "augment": None if args.no_augment else "random crop (zero pad 2) + horizontal flip",
        "seed": args.seed,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
        "param_count": n_params,
        "macs_per_image": macs,
        "input": "float32 [N,1,28,28] in [0,1], no normalisation",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "files": {
            "safetensors": f"{name}.safetensors",
            "onnx_legacy": f"{name}.onnx",
            "onnx_dynamo": f"{name}_dynamo.onnx",
        },
        **exports,
    }
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}/{name}.{{safetensors,onnx,json}} and {name}_dynamo.onnx", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
