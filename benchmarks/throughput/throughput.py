"""Throughput side by side: images/s of one batch simulated for T steps.

Rows, all in one run on one device, for each model and T:

* ``ANN x T``: the trained torch module's own inference time for the batch, times T (the
  issue's yardstick: "T x the ANN's own inference time");
* ``ANN on T*B``: the ANN on one batch of T*B images, i.e. the same dense work as T steps
  without the launch overhead of small batches: the real dense-compute floor (BatchNorm
  kept as in the trained module);
* ``snnc reference``: snnc's reference simulator (``snnc.simulator``);
* ``snnc spikingjelly``: the ``spikingjelly`` backend (SpikingJelly 2.0 multi-step
  network; on a GPU its CUDA/Triton IF kernels);
* ``SpikingJelly ann2snn``: SpikingJelly's own converter output (RateCodingRecipe,
  99.9 %, channel-wise, half threshold), stepped T times as its docs do.

Models: the shipped Fashion-MNIST VGG-BN (1x28x28) and a CIFAR-shaped (3x32x32) ResNet-18
with random weights (speed only). snnc models are converted with ``calibration="none"``
(calibration changes thresholds, not the work per step). Each timing is the median of
``--reps`` runs after one warm-up run, with the device synchronised; the batch is the same
for every row.

    python benchmarks/throughput/throughput.py                       # CPU
    python benchmarks/throughput/throughput.py --device cuda --reps 5  # GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from snnc.utils.io import write_json, write_text  # noqa: E402
from snnc.simulator import ReferenceSimulator, default_batch_size  # noqa: E402
from snnc.simulator.reference import keep_freed_memory  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "results"
ROWS = ("ANN x T", "ANN on T*B", "snnc reference", "snnc spikingjelly", "SpikingJelly ann2snn")
# CPU only: the same 256 images in the sub-batches snnc picks by default on a CPU (each
# [T, B, ...] value under 30 MiB, so it stays in cache and malloc reuses it).
CPU_ROWS = ("snnc reference, auto batch", "snnc spikingjelly, auto batch")


# ------------------------------------------------------------------ models
class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.short(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, stages 64-128-256-512 of two blocks), ``nn.ReLU`` modules
    (SpikingJelly's converter needs them)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def fashion_vgg_bn() -> tuple[nn.Module, object, np.ndarray]:
    from safetensors.torch import load_file

    from examples.fashion_mnist.models import build_model

    models = ROOT / "examples" / "fashion_mnist" / "models"
    info = json.loads((models / "vgg_bn.json").read_text())
    module = build_model(info["model"], **info.get("config", {}))
    module.load_state_dict(load_file(str(models / "vgg_bn.safetensors")))
    try:
        from examples.fashion_mnist.data import load_fashion_mnist

        x, _ = load_fashion_mnist("test")
    except Exception:  # data package missing: speed does not depend on the pixels much
        x = np.random.default_rng(0).uniform(0, 1, (1024, 1, 28, 28)).astype(np.float32)
    return module.eval(), models / "vgg_bn.onnx", x[:1024]


def cifar_resnet18() -> tuple[nn.Module, object, np.ndarray]:
    torch.manual_seed(0)
    module = ResNet18().eval()
    x = np.random.default_rng(0).normal(0, 1, (1024, 3, 32, 32)).astype(np.float32)
    return module, module, x


MODELS = {"fashion_vgg_bn": fashion_vgg_bn, "cifar_resnet18": cifar_resnet18}


# ------------------------------------------------------------------ timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup) -> dict:
    with torch.inference_mode():
        warmup()
        sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
    return {"seconds_per_batch": statistics.median(times), "runs": [round(t, 6) for t in times]}


def sj_ann2snn(module: nn.Module, calib: np.ndarray, device: str) -> nn.Module:
    from spikingjelly.activation_based import ann2snn
    from spikingjelly.activation_based.ann2snn.recipes import RateCodingRecipe

    loader = [(torch.from_numpy(calib[i : i + 64]),) for i in range(0, len(calib), 64)]
    recipe = RateCodingRecipe(loader, mode="99.9%", channel_wise=True, half_threshold=True)
    return ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(module)).eval().to(device)


def bench_model(name: str, steps: list[int], batch: int, device: str, reps: int, warm_batch: int) -> dict:
    from spikingjelly.activation_based import functional

    module, source, data = MODELS[name]()
    calib, x = data[:256], data[:batch]
    if len(x) < batch:
        x = np.concatenate([x] * (batch // len(x) + 1))[:batch]
    t0 = time.perf_counter()
    sm = snnc.convert(source, calib, timesteps=max(steps), calibration="none", progress=None)
    convert_s = time.perf_counter() - t0
    ann = copy.deepcopy(module).to(device)
    sj_snn = sj_ann2snn(module, calib, device)
    ref = ReferenceSimulator(sm.snn, device)
    net = sm.to_spikingjelly(device=device)
    xb = torch.from_numpy(x).to(device)
    xw = xb[:warm_batch]

    def stepped(inp, T):
        functional.reset_net(sj_snn)
        acc = None
        for _ in range(T):
            out = sj_snn(inp)
            acc = out if acc is None else acc + out
        return acc / T

    entry = {"snnc_convert_seconds": round(convert_s, 2), "neurons": len(sm.snn.find("if_neuron")), "results": {}}
    for T in steps:
        row = {}
        ann_t = timed(lambda: ann(xb), device, max(reps, 3), lambda: ann(xw))
        row["ANN x T"] = {"seconds_per_batch": ann_t["seconds_per_batch"] * T, "ann_seconds_per_batch": ann_t["seconds_per_batch"], "runs": ann_t["runs"]}
        big = xb.repeat(T, *([1] * (xb.dim() - 1)))
        row["ANN on T*B"] = timed(lambda: ann(big), device, reps, lambda: ann(xw))
        del big
        row["snnc reference"] = timed(lambda: ref.simulate(xb, [T]), device, reps, lambda: ref.simulate(xw, [T]))
        row["snnc spikingjelly"] = timed(lambda: net.sequence(xb, T), device, reps, lambda: net.sequence(xw, T))
        row["SpikingJelly ann2snn"] = timed(lambda: stepped(xb, T), device, reps, lambda: stepped(xw, T))
        if not device.startswith("cuda"):
            sub = default_batch_size(T, sm.snn, "cpu")
            chunks = [xb[i : i + sub] for i in range(0, batch, sub)]
            row[CPU_ROWS[0]] = timed(lambda: [ref.simulate(c, [T]) for c in chunks], device, reps, lambda: ref.simulate(xw, [T]))
            row[CPU_ROWS[1]] = timed(lambda: [net.sequence(c, T) for c in chunks], device, reps, lambda: net.sequence(xw, T))
            row[CPU_ROWS[0]]["sub_batch"] = row[CPU_ROWS[1]]["sub_batch"] = sub
        for r in row.values():
            r["images_per_second"] = batch / r["seconds_per_batch"]
        floor = row["ANN x T"]["seconds_per_batch"]
        for r in row.values():
            r["vs_T_x_ANN"] = r["seconds_per_batch"] / floor
        entry["results"][str(T)] = row
        print(f"{name} T={T}: " + ", ".join(f"{k} {v['images_per_second']:.0f} img/s" for k, v in row.items()), flush=True)
    return entry


def header(device: str, batch: int, reps: int) -> dict:
    import importlib.metadata

    dev = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    versions = {"snnc": snnc.__version__, "torch": torch.__version__, "python": platform.python_version(), "spikingjelly": importlib.metadata.version("spikingjelly")}
    if device.startswith("cuda"):
        versions["cuda"] = torch.version.cuda
        try:
            import triton

            versions["triton"] = triton.__version__
        except ImportError:
            pass
    return {"device": dev, "platform": platform.platform(), "batch": batch, "reps": reps, "versions": versions, "models": {}}


def markdown(res: dict) -> str:
    extra = [k for k in CPU_ROWS if any(k in row for e in res["models"].values() for row in e["results"].values())]
    cols = list(ROWS) + extra
    lines = [
        f"# Throughput: {res['device']}",
        "",
        f"Batch {res['batch']}, median of {res['reps']} runs after a warm-up; "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
        + f"; {res['platform']}.",
        "",
        "| model | T | " + " | ".join(cols) + " | snnc spikingjelly time / (T x ANN) | / (ANN on T*B) | snnc spikingjelly / SJ ann2snn throughput |",
        "|---|---|" + "---|" * (len(cols) + 3),
    ]
    for name, e in res["models"].items():
        for T, row in e["results"].items():
            cells = [f"{_rate(row[k]['images_per_second'])} img/s ({row[k]['seconds_per_batch'] * 1e3:,.1f} ms)" if k in row else "-" for k in cols]
            floor = f"{row['snnc spikingjelly']['seconds_per_batch'] / row['ANN on T*B']['seconds_per_batch']:.2f}x" if "ANN on T*B" in row else "-"
            ratio = row["snnc spikingjelly"]["seconds_per_batch"] / row["ANN x T"]["seconds_per_batch"]
            speedup = row["snnc spikingjelly"]["images_per_second"] / row["SpikingJelly ann2snn"]["images_per_second"]
            lines.append(f"| {name} | {T} | " + " | ".join(cells) + f" | {ratio:.2f}x | {floor} | {speedup:.2f}x |")
    if extra:
        sub = [f"{b} ({name}, T={T})" for name, e in res["models"].items() for T, row in e["results"].items() if (b := row[extra[0]].get("sub_batch"))]
        lines += ["", f"Auto batch: the same {res['batch']} images simulated in sub-batches of " + ", ".join(sub) + " (snnc's CPU default)."]
    return "\n".join(lines) + "\n"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--timesteps", default="8,32")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=None, help="timed runs per row (default: 5 on a GPU, 1 on a CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON/markdown path stem (default: results/<device>)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if not cuda:
        keep_freed_memory()  # what snnc's CPU simulation does; applies to every row alike
    reps = args.reps or (5 if cuda else 1)
    steps = [int(t) for t in args.timesteps.split(",")]
    res = header(args.device, args.batch, reps)
    for name in args.models.split(","):
        res["models"][name] = bench_model(name, steps, args.batch, args.device, reps, warm_batch=args.batch if cuda else 8)
    stem = Path(args.out) if args.out else OUT_DIR / ("gpu" if cuda else "cpu")
    write_json(stem.with_suffix(".json"), res)
    write_text(stem.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
