"""Next-day direction of 20 S&P 500 stocks: windows of past log-returns, chronological split.

The prices are the adjusted daily closes that ship inside the ``skfolio`` wheel
(``skfolio/datasets/data/sp500_dataset.csv.gz``: 20 tickers, 8313 trading days from
1990-01-02 to 2022-12-28) and the S&P 500 index closes beside it (``sp500_index.csv.gz``).
The CSVs are read with pandas directly (``import skfolio`` needs cvxpy, which is not
installed here); nothing is downloaded.

One sample = one (stock, decision day t). Its input ``x`` is float32 ``[3, L]`` (L = 32
trading days t-L+1 .. t, oldest first):

* channel 0: the stock's daily log-return divided by its trailing volatility,
* channel 1: the same for the S&P 500 index (the market),
* channel 2: the stock's excess log-return (stock minus index) divided by its trailing
  volatility.

The trailing volatility of day d is the standard deviation of the 63 log-returns up to and
including day d (``VOL_WINDOW``), so every input value uses prices up to day t only.
Each value is clipped to +-``CLIP`` and then standardised per channel with a mean and std
measured on the TRAINING period only. The label ``y`` is 1 when the stock's log-return from
day t to day t+1 is > 0 (up), else 0 (flat days count as "not up"; prices are rounded to
0.001 USD, so flat days are common in the early 1990s and rare after 2000).

The split goes by the label day t+1 (the day being predicted), so no label is in two
splits and every input window lies strictly before its label:

* train: label day 1990-01-02 .. 2015-12-31 (decision days from the first full window on),
* validation: label day 2016-01-01 .. 2018-12-31,
* test: label day 2019-01-01 .. 2022-12-28 (the last day of the data).

Usage::

    python -m examples.stocks.data OUT_DIR [--calib 1024] [--seed 0]

writes ``train.npz``, ``val.npz``, ``test.npz`` (arrays ``x`` [N,3,32] float32, ``y`` int64,
``date`` int64 YYYYMMDD of the decision day t, ``label_date`` of day t+1, ``ticker`` str,
``ret_next`` float32 next-day log-return) and ``calib.npz`` (``x``: a seeded random subset of
the training windows) into OUT_DIR, plus ``norm.json`` (the training statistics).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass

import numpy as np

WINDOW = 32  # days of history per sample
VOL_WINDOW = 63  # trailing days for the volatility normaliser (about 3 months)
CLIP = 5.0  # clip volatility-normalised returns to +-CLIP before standardising
CHANNELS = ("stock_return_z", "market_return_z", "excess_return_z")
SPLITS = {  # by label day (the day whose direction is predicted), inclusive
    "train": ("1990-01-01", "2015-12-31"),
    "val": ("2016-01-01", "2018-12-31"),
    "test": ("2019-01-01", "2022-12-31"),
}


def data_files() -> tuple[str, str]:
    """Paths of the stock and index CSVs inside the installed skfolio package."""
    spec = importlib.util.find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the skfolio package is not installed; `pip install --no-deps skfolio` ships the data")
    base = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    stocks, index = os.path.join(base, "sp500_dataset.csv.gz"), os.path.join(base, "sp500_index.csv.gz")
    for p in (stocks, index):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} is missing from the installed skfolio package")
    return stocks, index


def load_prices():
    """``(prices [D, S] DataFrame of adjusted closes, index [D] Series of S&P 500 closes)``."""
    import pandas as pd

    stocks, index = data_files()
    prices = pd.read_csv(stocks, index_col="Date", parse_dates=["Date"]).sort_index()
    spx = pd.read_csv(index, index_col="Date", parse_dates=["Date"]).sort_index()["SP500"]
    if not prices.index.equals(spx.index):
        raise ValueError("the stock and index CSVs have different dates")
    if prices.isna().any().any() or (prices <= 0).any().any():
        raise ValueError("the price table has missing or non-positive prices")
    return prices, spx


@dataclass
class Panel:
    """Per-day, per-stock arrays before windowing (row d = trading day d)."""

    dates: np.ndarray  # [D] datetime64[D]
    tickers: list[str]
    ret: np.ndarray  # [D, S] log-return from day d-1 to day d (row 0: nan)
    features: np.ndarray  # [D, S, C] clipped, volatility-normalised (not yet standardised)


def build_panel(prices=None, spx=None) -> Panel:
    """Features of every day from the price tables (default: the skfolio CSVs). Causal: the
    row of day d depends on prices up to day d only (tests check this by truncation)."""
    if prices is None or spx is None:
        prices, spx = load_prices()
    ret = np.log(prices.to_numpy(np.float64))
    ret = np.vstack([np.full((1, ret.shape[1]), np.nan), np.diff(ret, axis=0)])
    mret = np.log(spx.to_numpy(np.float64))
    mret = np.concatenate([[np.nan], np.diff(mret)])

    def trailing_std(a: np.ndarray) -> np.ndarray:
        import pandas as pd

        # std of the VOL_WINDOW values up to and including row d; causal
        return pd.DataFrame(a).rolling(VOL_WINDOW, min_periods=VOL_WINDOW).std().to_numpy()

    excess = ret - mret[:, None]
    vol_s = trailing_std(ret)
    vol_m = trailing_std(mret[:, None])
    vol_e = trailing_std(excess)
    eps = 1e-4  # a stale price series (RRC in 1990-91) has near-zero volatility
    feats = np.stack(
        [ret / np.maximum(vol_s, eps), np.broadcast_to(mret[:, None] / np.maximum(vol_m, eps), ret.shape), excess / np.maximum(vol_e, eps)],
        axis=-1,
    )
    feats = np.clip(feats, -CLIP, CLIP)
    return Panel(prices.index.to_numpy().astype("datetime64[D]"), list(prices.columns), ret, feats)


def _yyyymmdd(d: np.ndarray) -> np.ndarray:
    s = np.datetime_as_string(d, unit="D")
    return np.char.replace(s, "-", "").astype(np.int64)


def make_windows(panel: Panel) -> dict[str, np.ndarray]:
    """All (stock, decision day) samples with a full window and a next day, unstandardised."""
    D, S, C = panel.features.shape
    first = VOL_WINDOW + WINDOW  # first decision day whose whole window has a volatility
    days = np.arange(first, D - 1)
    # windows [n_days, S, C, L]
    idx = days[:, None] - np.arange(WINDOW - 1, -1, -1)[None, :]  # [n_days, L], oldest first
    win = panel.features[idx]  # [n_days, L, S, C]
    win = win.transpose(0, 2, 3, 1)  # [n_days, S, C, L]
    if not np.isfinite(win).all():
        raise ValueError("non-finite feature in a window")
    nxt = panel.ret[days + 1]  # [n_days, S]
    return {
        "x": win.reshape(-1, C, WINDOW).astype(np.float32),
        "y": (nxt > 0).astype(np.int64).reshape(-1),
        "ret_next": nxt.astype(np.float32).reshape(-1),
        "date": np.repeat(_yyyymmdd(panel.dates[days]), S),
        "label_date": np.repeat(_yyyymmdd(panel.dates[days + 1]), S),
        "ticker": np.tile(np.array(panel.tickers), len(days)),
    }


def _in(d: np.ndarray, lo: str, hi: str) -> np.ndarray:
    return (d >= int(lo.replace("-", ""))) & (d <= int(hi.replace("-", "")))


def standardise(splits: dict[str, dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Standardise every split's ``x`` in place per channel with the training split's mean
    and std (over windows and days); returns them."""
    xt = splits["train"]["x"]
    mean = xt.mean(axis=(0, 2)).astype(np.float32)
    std = xt.std(axis=(0, 2)).astype(np.float32)
    for s in splits.values():
        s["x"] = ((s["x"] - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    return mean, std


def load_splits() -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({"train"|"val"|"test": arrays}, norm)``: standardised with train-period statistics."""
    allw = make_windows(build_panel())
    splits = {}
    for name, (lo, hi) in SPLITS.items():
        m = _in(allw["label_date"], lo, hi)
        splits[name] = {k: v[m] for k, v in allw.items()}
    mean, std = standardise(splits)
    norm = {
        "channels": list(CHANNELS),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "window": WINDOW,
        "vol_window": VOL_WINDOW,
        "clip": CLIP,
    }
    return splits, norm


def write_splits(out_dir: str, calib_n: int = 1024, seed: int = 0) -> dict[str, str]:
    from snnc.utils.io import write_json, write_npz

    os.makedirs(out_dir, exist_ok=True)
    splits, norm = load_splits()
    paths = {}
    for name, arrays in splits.items():
        paths[name] = os.path.join(out_dir, f"{name}.npz")
        write_npz(paths[name], **arrays)
    rng = np.random.default_rng(seed)
    xt = splits["train"]["x"]
    idx = np.sort(rng.choice(len(xt), size=min(calib_n, len(xt)), replace=False))
    paths["calib"] = os.path.join(out_dir, "calib.npz")
    write_npz(paths["calib"], x=xt[idx], y=splits["train"]["y"][idx])
    paths["norm"] = os.path.join(out_dir, "norm.json")
    write_json(paths["norm"], norm)
    return paths


def describe(splits: dict[str, dict[str, np.ndarray]]) -> dict:
    out = {}
    for name, s in splits.items():
        out[name] = {
            "samples": int(len(s["y"])),
            "days": int(len(np.unique(s["label_date"]))),
            "first_label_day": int(s["label_date"].min()),
            "last_label_day": int(s["label_date"].max()),
            "up_fraction": float(s["y"].mean()),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--calib", type=int, default=1024, help="calibration windows drawn from the training period")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = write_splits(args.out_dir, args.calib, args.seed)
    import json

    from snnc.utils.io import load_npz

    for name in ("train", "val", "test"):
        z = load_npz(paths[name], required=("x", "y"))
        print(
            f"{name:<5} {len(z['y']):>7} windows {z['x'].shape[1:]}, label days {z['label_date'].min()}..{z['label_date'].max()}, "
            f"up {z['y'].mean():.4f}"
        )
    print("wrote", json.dumps(paths))
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    sys.exit(main())
