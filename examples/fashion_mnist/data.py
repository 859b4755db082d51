"""Fashion-MNIST loading (numpy only) and calibration/test split export.

The raw IDX files come from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``).  Set ``SNNC_FASHION_MNIST_DIR`` to
read them from another directory.

Usage as a script::

    python -m examples.fashion_mnist.data OUT_DIR [--calib N] [--test N] [--train N] [--seed S]
    python examples/fashion_mnist/data.py OUT_DIR [--calib N] [--test N] [--train N] [--seed S]

writes ``OUT_DIR/calib.npz`` (``x``, ``y``: a seeded random subset of the
training split) and ``OUT_DIR/test.npz`` (``x``, ``y``: the first N images of
the test split); with ``--train N`` also ``OUT_DIR/train.npz`` (``x``, ``y``: a
seeded random subset of N training-split images, for ``snnc finetune``; it may
overlap calib.npz, which is drawn from the same split).  ``x`` is float32 ``[N, 1, 28, 28]`` in ``[0, 1]``, ``y`` is
int64 ``[N]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile

import numpy as np

ENV_DIR = "SNNC_FASHION_MNIST_DIR"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type codes -> numpy dtypes (big-endian as stored on disk).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def data_dir() -> str:
    """Directory holding the IDX gz files (env override or Debian default)."""
    return os.environ.get(ENV_DIR) or DEFAULT_DIR


def _missing_error(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Fashion-MNIST file not found: {path}\n"
        f"Install the dataset with `apt-get install dataset-fashion-mnist` "
        f"(files go to {DEFAULT_DIR}), or point the environment variable "
        f"{ENV_DIR} at a directory containing "
        f"{', '.join(f for pair in _FILES.values() for f in pair)}."
    )


def read_idx(path: str) -> np.ndarray:
    """Read a (gzip-compressed or plain) IDX file into a numpy array."""
    if not os.path.exists(path):
        raise _missing_error(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    dtype = _IDX_DTYPES[code]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file (shape {shape})")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def load_fashion_mnist(split: str, directory: str | None = None):
    """Load a Fashion-MNIST split.

    Returns ``(x, y)``: ``x`` float32 ``[N, 1, 28, 28]`` scaled to ``[0, 1]``,
    ``y`` int64 ``[N]``.  ``split`` is ``"train"`` (60000) or ``"test"`` (10000).
    """
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    directory = directory or data_dir()
    img_name, lbl_name = _FILES[split]
    images = read_idx(os.path.join(directory, img_name))
    labels = read_idx(os.path.join(directory, lbl_name))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"unexpected image array shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match images {images.shape}")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    y = labels.astype(np.int64)
    return np.ascontiguousarray(x), y


def _save_npz_atomic(path: str, **arrays) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_npz_splits(out_dir: str, calib_n: int = 1024, test_n: int = 2000, seed: int = 0, train_n: int = 0):
    """Write ``calib.npz`` and ``test.npz`` into ``out_dir``; return their paths.

    ``calib.npz``: ``calib_n`` images drawn without replacement from the TRAIN
    split with ``numpy.random.default_rng(seed)`` (arrays ``x``, ``y``).
    ``test.npz``: the first ``test_n`` images of the TEST split (``x``, ``y``).
    With ``train_n`` > 0 also ``train.npz``: ``train_n`` TRAIN-split images drawn with
    ``numpy.random.default_rng(seed + 1)`` (``x``, ``y``, in random order), whose path is
    returned third.
    """
    os.makedirs(out_dir, exist_ok=True)
    x_tr, y_tr = load_fashion_mnist("train")
    x_te, y_te = load_fashion_mnist("test")
    if not 0 < calib_n <= len(x_tr):
        raise ValueError(f"calib_n must be in [1, {len(x_tr)}], got {calib_n}")
    if not 0 < test_n <= len(x_te):
        raise ValueError(f"test_n must be in [1, {len(x_te)}], got {test_n}")
    if not 0 <= train_n <= len(x_tr):
        raise ValueError(f"train_n must be in [0, {len(x_tr)}], got {train_n}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_tr), size=calib_n, replace=False))
    calib_path = os.path.join(out_dir, "calib.npz")
    test_path = os.path.join(out_dir, "test.npz")
    _save_npz_atomic(calib_path, x=x_tr[idx], y=y_tr[idx])
    _save_npz_atomic(test_path, x=x_te[:test_n], y=y_te[:test_n])
    if train_n:
        train_path = os.path.join(out_dir, "train.npz")
        tidx = np.random.default_rng(seed + 1).choice(len(x_tr), size=train_n, replace=False)
        _save_npz_atomic(train_path, x=x_tr[tidx], y=y_tr[tidx])
        return calib_path, test_path, train_path
    return calib_path, test_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write Fashion-MNIST calib.npz / test.npz.")
    p.add_argument("out_dir")
    p.add_argument("--calib", type=int, default=1024, help="calibration images (from train split)")
    p.add_argument("--test", type=int, default=2000, help="first N test-split images")
    p.add_argument("--train", type=int, default=0, help="also write train.npz: N images of the train split (for snnc finetune)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = write_npz_splits(args.out_dir, args.calib, args.test, args.seed, args.train)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {paths[0]} ({args.calib} images) and {paths[1]} ({args.test} images)")
    if args.train:
        print(f"wrote {paths[2]} ({args.train} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
