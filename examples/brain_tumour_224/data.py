"""Br35H brain-MRI tumour data at 224×224, with exactly the split of ``examples.brain_tumour``.

The split is computed by :func:`examples.brain_tumour.data.split_indices` on the 64×64
images (its perceptual hash is defined there), so train / validation / test hold the same
images as the 64×64 example; the images are then loaded again at 224×224 (grey, padded to
a square with black, bilinear resize, [0, 1]) by the same ``load_br35h``.

    python -m examples.brain_tumour_224.data .data/brain_tumour_224   # train/val/test/calib .npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from examples.brain_tumour.data import load_br35h, print_written, split_indices

SIZE = 224
DATA_DIR = Path(".data/brain_tumour_224")


def load_splits(size: int = SIZE, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train" | "val" | "test": (x [N, 1, size, size] float32, y [N] int64)}``."""
    x64, y, names = load_br35h(64)
    idx = split_indices(x64, y, seed)
    del x64
    x, y2, names2 = load_br35h(size)
    assert names2 == names and np.array_equal(y2, y)
    return {s: (x[i], y[i]) for s, i in idx.items()}


def write_npz_splits(out_dir: str | Path = DATA_DIR, calib: int = 128, size: int = SIZE, seed: int = 0) -> dict[str, str]:
    """Write ``{train,val,test,calib}.npz``; calib = ``calib`` seeded training images
    (default 128: light calibration of a ResNet-18 at 224² takes ≈ 13 s per image on 2 cores)."""
    from snnc.utils.io import write_npz

    out_dir = Path(out_dir)
    splits = load_splits(size, seed)
    paths = {}
    for s, (x, y) in splits.items():
        paths[s] = str(out_dir / f"{s}.npz")
        write_npz(paths[s], x=x, y=y)
    x_tr, y_tr = splits["train"]
    pick = np.sort(np.random.default_rng(seed).choice(len(x_tr), size=min(calib, len(x_tr)), replace=False))
    paths["calib"] = str(out_dir / "calib.npz")
    write_npz(paths["calib"], x=x_tr[pick], y=y_tr[pick])
    return paths


def cached_splits(out_dir: str | Path = DATA_DIR) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train/val/test splits from ``out_dir`` (written first when missing)."""
    out_dir = Path(out_dir)
    if not all((out_dir / f"{s}.npz").is_file() for s in ("train", "val", "test", "calib")):
        write_npz_splits(out_dir)
    out = {}
    for s in ("train", "val", "test"):
        with np.load(out_dir / f"{s}.npz") as z:
            out[s] = (z["x"], z["y"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write Br35H train/val/test/calib .npz files at 224×224 (x: [N,1,224,224] in [0,1], y: 1 = tumour).")
    p.add_argument("out_dir", nargs="?", default=str(DATA_DIR))
    p.add_argument("--calib", type=int, default=128, help="calibration images (seeded subset of the training split)")
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = write_npz_splits(args.out_dir, args.calib, args.size, args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_written(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
