"""ANN vs SNN study of the converted brain_seg U-Net (Dice per class, pixel accuracy).

    python -m examples.brain_seg.evaluate [--artifact out/brain_seg/unet_T32.snn]
        [--data .data/brain_seg/test.npz] [--lava 5] [--lava-fixed 2] [--out examples/brain_seg/results]

Runs the artifact on the test slices at T = 4, 8, 16, 32, 64 on the reference simulator and
SpikingJelly (all test slices) and on Lava float / Lava fixed point (the first ``--lava`` /
``--lava-fixed`` slices: Lava is slow on CPU; the test slices are ordered so that the first
five come from the five test slabs, one each), scores the ANN and the SNN with Dice per
class (pixels of the evaluated slices pooled) and pixel accuracy, and writes
``results.json``, ``results.md`` and ``results.png`` (Dice of grey matter vs T).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.brain_seg.data import CLASSES  # noqa: E402
from examples.common.study import DEFAULT_TIMESTEPS, Study, dice_per_class  # noqa: E402
from snnc.utils.io import load_npz  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHORT = {"background": "bg", "grey_matter": "gm", "white_matter": "wm"}


def dice_metric(c: int):
    def fn(out: np.ndarray, y: np.ndarray) -> float:
        return dice_per_class(out, y, len(CLASSES))[c]

    fn.__name__ = f"dice_{SHORT[CLASSES[c]]}"
    return fn


def pixel_accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(out.argmax(axis=1) == y))


METRICS = {**{f"dice_{SHORT[c]}": dice_metric(i) for i, c in enumerate(CLASSES)}, "pixel_acc": pixel_accuracy}


def interleave_slabs(z: np.ndarray) -> np.ndarray:
    """An order of slices with axial indices ``z``: the first slice of every slab (run of
    consecutive z), then the second of every slab, ...; a prefix of it samples every slab."""
    z = np.asarray(z)
    order = np.argsort(z, kind="stable")
    slab = np.concatenate([[0], np.cumsum(np.diff(z[order]) > 1)])
    rank = np.zeros(len(z), dtype=np.int64)
    for s in np.unique(slab):
        rank[slab == s] = np.arange(int((slab == s).sum()))
    return order[np.lexsort((slab, rank))]


def plot_classes(result: dict, path: str) -> None:
    """Dice of each class against T, one panel per class, every backend and the ANN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnc.utils.io import atomic_write

    markers = {"reference": "o", "spikingjelly": "s", "lava": "^", "lava-fixed": "v"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, cls in zip(axes, CLASSES):
        key = f"dice_{SHORT[cls]}"
        for be, r in result["backends"].items():
            if "skipped" in r:
                continue
            ts = [row["timesteps"] for row in r["results"]]
            ax.plot(ts, [row[key] for row in r["results"]], marker=markers.get(be, "x"), label=f"SNN {be} (n={r['samples']})")
            if r["samples"] != result["samples"]:
                ax.axhline(r["ann"][key], color="grey", ls=":", lw=1)
        ax.axhline(result["ann"][key], color="k", ls="--", lw=1, label=f"ANN (n={result['samples']})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["timesteps"], [str(t) for t in result["timesteps"]])
        ax.set_xlabel("timesteps T")
        ax.set_title(f"Dice, {cls.replace('_', ' ')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("ANN vs SNN Dice (dotted: ANN on the Lava subsets)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=os.path.join("out", "brain_seg", "unet_T32.snn"))
    p.add_argument("--data", default=os.path.join(".data", "brain_seg", "test.npz"))
    p.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)))
    p.add_argument("--lava", type=int, default=5, help="test slices on Lava float (0: skip)")
    p.add_argument("--lava-fixed", type=int, default=2, help="test slices on Lava fixed point (0: skip)")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--note", action="append", default=[], help="a note to record in results.json/md")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    d = load_npz(args.data, required=("x", "y"), what="test data")
    x, y = d["x"], d["y"].astype(np.int64)
    if "z" in d:  # interleave the slabs, so that the Lava prefixes span the whole brain
        order = interleave_slabs(d["z"])
        x, y = x[order], y[order]
    backends: dict[str, int | None] = {"reference": None}
    if not args.no_spikingjelly:
        backends["spikingjelly"] = None
    if args.lava > 0:
        backends["lava"] = args.lava
    if args.lava_fixed > 0:
        backends["lava-fixed"] = args.lava_fixed
    study = Study(
        subset_order="prefix",  # the slab-interleaved order above decides which slices Lava runs
        title="Brain tissue segmentation (MNI152 slices, U-Net)",
        metrics=METRICS,
        primary="dice_gm",
        timesteps=tuple(int(t) for t in args.timesteps.split(",")),
        notes=[
            f"{len(x)} axial test slices of 80x96 (2 mm), slabs interleaved (z order: {', '.join(map(str, d['z'][order]))})" if "z" in d else f"{len(x)} test slices",
            "Dice per class pools the pixels of all evaluated slices",
            *args.note,
        ],
    )
    result = study.run(args.artifact, x, y, backends=backends, out_dir=args.out, device="cpu")
    plot_classes(result, os.path.join(args.out, "dice_vs_T.png"))
    print(f"wrote {args.out}/results.{{json,md,png}} and dice_vs_T.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
