"""Brain tissue segmentation data: 2-D axial slices of the MNI152 template (nilearn).

Everything comes from files shipped inside the ``nilearn`` package (no download):

* input: ``nilearn.datasets.load_mni152_template(resolution=1)``, the skull-stripped T1
  template of the MNI152 2009 atlas, 197 x 233 x 189 voxels at 1 mm, values in [0, 1];
* labels: ``load_mni152_gm_template`` and ``load_mni152_wm_template`` (grey / white matter
  probability maps, same grid). Background is ``clip(1 - GM - WM, 0, 1)`` (so CSF and
  everything outside the brain are background).

Preprocessing (:func:`load_volumes`):

1. crop the 1-mm grid to x in [20, 180), y in [20, 212) (the brain spans x 27..169,
   y 28..207), all z;
2. average 2 x 2 in-plane blocks -> 2-mm pixels, giving axial slices of 80 x 96
   (rows = x, columns = y); the tissue maps are averaged the same way;
3. label of a pixel = argmax over (background, GM, WM) of the averaged maps
   (0 = background, 1 = grey matter, 2 = white matter).

The pooling phase (offset 0 or 1 mm along x and y before the 2 x 2 average) gives four
different 2-mm resamplings of each slice; training may use all four as augmentation
(``phase``), validation / test / calibration use phase (0, 0).

Split. There is only ONE brain (the template), so the split is by axial slice index z
(1-mm slices, z in [5, 155), which covers the brain). The range is cut into 5 cycles of
30 slices: ``train 12 | gap 3 | val 3 | gap 3 | test 6 | gap 3``. Slabs are disjoint and
every pair of slabs from different splits is at least 4 mm apart (3 gap slices), which
limits, but does not remove, the leakage between neighbouring slices of one brain.
This gives 60 train, 15 val and 30 test slices spread over the whole brain. The test
set measures ANN -> SNN conversion fidelity on unseen slices, not generalisation to other
subjects.

Usage::

    python -m examples.brain_seg.data OUT_DIR      # default OUT_DIR .data/brain_seg

writes ``OUT_DIR/calib.npz`` (``x``: all 60 training slices, phase (0, 0)),
``OUT_DIR/val.npz`` and ``OUT_DIR/test.npz`` (``x``, ``y`` and ``z``, the slice indices).
``x`` is float32 ``[N, 1, 80, 96]`` in [0, 1], ``y`` int64 ``[N, 80, 96]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make `examples.brain_seg` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CLASSES = ("background", "grey_matter", "white_matter")
SHAPE = (80, 96)
X_RANGE = (20, 180)
Y_RANGE = (20, 212)
Z_RANGE = (5, 155)
# one cycle of the split, in 1-mm axial slices
CYCLE = (("train", 12), ("gap", 3), ("val", 3), ("gap", 3), ("test", 6), ("gap", 3))
DEFAULT_OUT = os.path.join(".data", "brain_seg")


def split_indices() -> dict[str, np.ndarray]:
    """Axial slice indices (1-mm z) of each split: ``{"train", "val", "test", "gap"}``."""
    out: dict[str, list[int]] = {"train": [], "val": [], "test": [], "gap": []}
    z = Z_RANGE[0]
    while z < Z_RANGE[1]:
        for name, n in CYCLE:
            for _ in range(n):
                if z < Z_RANGE[1]:
                    out[name].append(z)
                z += 1
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


@functools.lru_cache(maxsize=1)
def _raw_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the brain_seg example needs nilearn (pip install nilearn); its MNI152 templates ship with the package") from e
    t1 = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    gm = np.asarray(load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    if not t1.shape == gm.shape == wm.shape == (197, 233, 189):
        raise ValueError(f"unexpected MNI152 template shapes {t1.shape}, {gm.shape}, {wm.shape}")
    return t1, gm, wm


def _pool(vol: np.ndarray, phase: tuple[int, int]) -> np.ndarray:
    """Crop to the example's field of view (shifted by ``phase`` mm) and 2x2-average in-plane."""
    (x0, x1), (y0, y1) = X_RANGE, Y_RANGE
    dx, dy = phase
    v = vol[x0 + dx : x1 + dx, y0 + dy : y1 + dy, :]
    h, w, d = v.shape
    return v.reshape(h // 2, 2, w // 2, 2, d).mean(axis=(1, 3))


def load_volumes(phase: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """The whole preprocessed template: ``x`` float32 ``[189, 1, 80, 96]`` (one axial slice
    per z) and ``y`` int64 ``[189, 80, 96]`` (0 background, 1 GM, 2 WM)."""
    if phase not in ((0, 0), (0, 1), (1, 0), (1, 1)):
        raise ValueError(f"phase must be (0|1, 0|1), got {phase!r}")
    t1, gm, wm = _raw_volumes()
    x = _pool(t1, phase)
    g, w = _pool(gm, phase), _pool(wm, phase)
    bg = np.clip(1.0 - g - w, 0.0, 1.0)
    y = np.argmax(np.stack([bg, g, w]), axis=0)
    x = np.ascontiguousarray(np.clip(x, 0.0, 1.0).transpose(2, 0, 1)[:, None], dtype=np.float32)
    y = np.ascontiguousarray(y.transpose(2, 0, 1), dtype=np.int64)
    return x, y


def load_split(split: str, phase: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, z)`` of one split (``"train"``, ``"val"`` or ``"test"``), slices in z order."""
    idx = split_indices()
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    x, y = load_volumes(phase)
    z = idx[split]
    return x[z], y[z], z


def write_npz_splits(out_dir: str = DEFAULT_OUT) -> dict[str, str]:
    """Write ``calib.npz`` (x of the training slices), ``val.npz`` and ``test.npz`` (x, y, z)."""
    from snnc.utils.io import write_npz

    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    x, _, z = load_split("train")
    paths["calib"] = os.path.join(out_dir, "calib.npz")
    write_npz(paths["calib"], x=x, z=z)
    for split in ("val", "test"):
        x, y, z = load_split(split)
        paths[split] = os.path.join(out_dir, f"{split}.npz")
        write_npz(paths[split], x=x, y=y, z=z)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write calib.npz, val.npz and test.npz for the brain_seg example.")
    p.add_argument("out_dir", nargs="?", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    paths = write_npz_splits(args.out_dir)
    for name, path in paths.items():
        with np.load(path) as f:
            shapes = ", ".join(f"{k} {f[k].shape}" for k in f.files)
        print(f"{name}: {path} ({shapes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
