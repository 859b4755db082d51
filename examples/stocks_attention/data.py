"""Targets for the stock windows of ``examples/stocks``: next-week volatility regime and
next-day direction, with a chronological split by the LAST label day.

Inputs are exactly the windows of :mod:`examples.stocks.data` (``build_panel``): one sample
is one (stock, decision day t); ``x`` is float32 ``[3, 32]`` over days t-31 .. t (stock,
market and excess log-returns divided by their trailing 63-day volatility, clipped to +-5),
standardised per channel with the mean and std of this target's TRAINING windows. Every
input value uses prices up to day t only.

Targets (``TARGETS``; H = number of label days after t):

* ``regime`` (H = 5): ``y = 1`` when the stock's realised volatility over days t+1 .. t+5
  (sample std, ddof 1, of its five daily log-returns) is above its trailing volatility at
  day t (sample std of the 63 log-returns of days t-62 .. t, the same normaliser the
  inputs use). The label uses days t+1 .. t+5; nothing after day t enters ``x``.
* ``direction`` (H = 1): ``y = 1`` when the log-return from day t to day t+1 is > 0, the
  label of ``examples/stocks`` (same windows, same split).

Split: a window belongs to the split (``examples.stocks.data.SPLITS``) that contains its
last label day t+H; windows whose label days t+1 .. t+H straddle a split boundary are
dropped, so no label of one split uses a day of another.

Extra per-window arrays (not model inputs):

* ``date`` decision day t, ``label_first`` day t+1, ``label_date`` day t+H (YYYYMMDD),
  ``ticker``;
* ``persist_ratio`` (regime): this week's realised volatility (std of the log-returns of
  days t-4 .. t) over the trailing 63-day volatility at t; causal, used by the
  "persistence" baseline (predict high when > 1);
* ``ret_next``: the log-return from t to t+1 (direction: flat days are left out of the
  training loss, as in ``examples/stocks``).

Usage::

    python -m examples.stocks_attention.data [OUT_DIR] [--target regime direction] [--check]

writes ``OUT_DIR/<target>/{train,val,test,calib}.npz`` (``x`` float32 [N,3,32], ``y``
int64, plus the arrays above; ``calib.npz`` holds 1024 seeded random training windows)
and ``norm.json``; default OUT_DIR ``.data/stocks_attention``. ``--check`` first runs the
self-checks of :func:`self_check` (no look-ahead by truncation, labels recomputed from
prices, split boundaries).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.stocks.data import (  # noqa: E402
    CHANNELS,
    CLIP,
    SPLITS,
    VOL_WINDOW,
    WINDOW,
    Panel,
    _in,
    _yyyymmdd,
    build_panel,
    load_prices,
    standardise,
)

TARGETS = {"regime": 5, "direction": 1}  # target -> label horizon H (days after t)
CLASS_NAMES = {"regime": ("calm (next-week vol <= trailing)", "high (next-week vol > trailing)"),
               "direction": ("not up", "up")}
DEFAULT_OUT = os.path.join(".data", "stocks_attention")


def _rolling_std(a: np.ndarray, n: int) -> np.ndarray:
    """Sample std (ddof 1) of rows d-n+1 .. d of a [D, S] array; NaN where incomplete."""
    import pandas as pd

    return pd.DataFrame(a).rolling(n, min_periods=n).std().to_numpy()


def vol_arrays(panel: Panel, horizon: int = 5) -> dict[str, np.ndarray]:
    """``trailing`` [D,S]: std of the 63 returns up to day d; ``week`` [D,S]: std of the
    ``horizon`` returns up to day d (row d+H of it is the realised vol of d+1 .. d+H)."""
    return {"trailing": _rolling_std(panel.ret, VOL_WINDOW), "week": _rolling_std(panel.ret, horizon)}


def make_target_windows(panel: Panel, target: str) -> dict[str, np.ndarray]:
    """All (stock, decision day) samples with a full input window and H label days,
    unstandardised."""
    H = TARGETS[target]
    D, S, C = panel.features.shape
    first = VOL_WINDOW + WINDOW  # first decision day whose whole window has a volatility
    days = np.arange(first, D - H)
    idx = days[:, None] - np.arange(WINDOW - 1, -1, -1)[None, :]  # [n_days, L], oldest first
    win = panel.features[idx].transpose(0, 2, 3, 1)  # [n_days, S, C, L]
    if not np.isfinite(win).all():
        raise ValueError("non-finite feature in a window")
    nxt = panel.ret[days + 1]
    out = {
        "x": win.reshape(-1, C, WINDOW).astype(np.float32),
        "date": np.repeat(_yyyymmdd(panel.dates[days]), S),
        "label_first": np.repeat(_yyyymmdd(panel.dates[days + 1]), S),
        "label_date": np.repeat(_yyyymmdd(panel.dates[days + H]), S),
        "ticker": np.tile(np.array(panel.tickers), len(days)),
        "ret_next": nxt.astype(np.float32).reshape(-1),
    }
    if target == "direction":
        y = nxt > 0
    elif target == "regime":
        v = vol_arrays(panel, H)
        trailing = v["trailing"][days]  # up to day t
        future = v["week"][days + H]  # returns of t+1 .. t+H
        past = v["week"][days]  # returns of t-H+1 .. t
        if not (np.isfinite(trailing).all() and np.isfinite(future).all() and np.isfinite(past).all()):
            raise ValueError("non-finite volatility")
        y = future > trailing
        out["persist_ratio"] = (past / np.maximum(trailing, 1e-12)).astype(np.float32).reshape(-1)
    else:
        raise ValueError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    out["y"] = y.astype(np.int64).reshape(-1)
    return out


def split_windows(allw: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """``({split: arrays}, dropped)``: by last label day; windows whose first and last label
    days fall in different splits are dropped (``dropped`` counts them)."""
    splits, kept = {}, 0
    for name, (lo, hi) in SPLITS.items():
        m = _in(allw["label_date"], lo, hi) & _in(allw["label_first"], lo, hi)
        splits[name] = {k: v[m] for k, v in allw.items()}
        kept += int(m.sum())
    return splits, len(allw["y"]) - kept


def load_target_splits(target: str, panel: Panel | None = None) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({"train"|"val"|"test": arrays}, norm)``, ``x`` standardised with the training
    windows' per-channel mean and std."""
    panel = build_panel() if panel is None else panel
    splits, dropped = split_windows(make_target_windows(panel, target))
    mean, std = standardise(splits)
    norm = {
        "target": target,
        "horizon_days": TARGETS[target],
        "classes": list(CLASS_NAMES[target]),
        "channels": list(CHANNELS),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "window": WINDOW,
        "vol_window": VOL_WINDOW,
        "clip": CLIP,
        "dropped_straddling_windows": dropped,
    }
    return splits, norm


def describe(splits: dict[str, dict[str, np.ndarray]]) -> dict:
    return {
        name: {
            "samples": int(len(s["y"])),
            "label_days": int(len(np.unique(s["label_date"]))),
            "first_decision_day": int(s["date"].min()),
            "last_decision_day": int(s["date"].max()),
            "first_label_day": int(s["label_first"].min()),
            "last_label_day": int(s["label_date"].max()),
            "positive_fraction": float(s["y"].mean()),
        }
        for name, s in splits.items()
    }


def write_target(out_dir: str, target: str, calib_n: int = 1024, seed: int = 0, panel: Panel | None = None) -> dict:
    from snnc.utils.io import write_json, write_npz

    d = os.path.join(out_dir, target)
    os.makedirs(d, exist_ok=True)
    splits, norm = load_target_splits(target, panel)
    paths = {}
    for name, arrays in splits.items():
        paths[name] = os.path.join(d, f"{name}.npz")
        write_npz(paths[name], **arrays)
    rng = np.random.default_rng(seed)
    tr = splits["train"]
    idx = np.sort(rng.choice(len(tr["y"]), size=min(calib_n, len(tr["y"])), replace=False))
    paths["calib"] = os.path.join(d, "calib.npz")
    write_npz(paths["calib"], x=tr["x"][idx], y=tr["y"][idx])
    paths["norm"] = os.path.join(d, "norm.json")
    write_json(paths["norm"], {**norm, "splits": describe(splits)})
    return paths


def self_check(cut_days: tuple[int, ...] = (3000, 6500, 7210)) -> list[str]:
    """Raise AssertionError on a violation; return what was checked.

    * No look-ahead: for a decision day K, the (unstandardised) input window and the
      persistence ratio computed from prices truncated after day K equal those from the
      full history.
    * Labels: recomputed directly from prices for random samples.
    * Split: ordered, disjoint, every window's label days inside its split, and every input
      window ends before its first label day.
    """
    prices, spx = load_prices()
    full = build_panel(prices, spx)
    done = []
    for target, H in TARGETS.items():
        allw = make_target_windows(full, target)
        for K in cut_days:
            cut = build_panel(prices.iloc[: K + 1], spx.iloc[: K + 1])
            # truncated panel: decision day K cannot get a label, so compare the causal parts
            D = K + 1
            first = VOL_WINDOW + WINDOW
            win_cut = cut.features[K - WINDOW + 1 : K + 1].transpose(1, 2, 0)  # [S, C, L]
            m = allw["date"] == _yyyymmdd(full.dates[K : K + 1])[0]
            assert m.sum() == len(full.tickers) and K >= first and D <= len(full.dates)
            assert np.array_equal(allw["x"][m], win_cut.astype(np.float32)), f"look-ahead in x at day {K}"
            if target == "regime":
                v = vol_arrays(cut, H)
                ratio = (v["week"][K] / np.maximum(v["trailing"][K], 1e-12)).astype(np.float32)
                assert np.array_equal(allw["persist_ratio"][m], ratio), f"look-ahead in persist_ratio at day {K}"
        # labels from prices, random samples
        rng = np.random.default_rng(1)
        p = np.log(prices.to_numpy(np.float64))
        dates = _yyyymmdd(full.dates)
        for i in rng.choice(len(allw["y"]), 200, replace=False):
            t = int(np.searchsorted(dates, allw["date"][i]))
            s = full.tickers.index(str(allw["ticker"][i]))
            if target == "direction":
                want = p[t + 1, s] - p[t, s] > 0
            else:
                fut = np.diff(p[t : t + H + 1, s])
                trail = np.diff(p[t - VOL_WINDOW : t + 1, s])
                want = np.std(fut, ddof=1) > np.std(trail, ddof=1)
                # the rolling std and numpy may differ by rounding only when nearly tied
                if abs(np.std(fut, ddof=1) - np.std(trail, ddof=1)) < 1e-12:
                    continue
            assert int(want) == allw["y"][i], f"{target} label of sample {i} differs from prices"
            assert dates[t + 1] == allw["label_first"][i] and dates[t + H] == allw["label_date"][i]
        splits, dropped = split_windows(allw)
        prev_hi = None
        for name, (lo, hi) in SPLITS.items():
            s = splits[name]
            assert _in(s["label_first"], lo, hi).all() and _in(s["label_date"], lo, hi).all()
            assert (s["date"] < s["label_first"]).all()
            if prev_hi is not None:
                assert s["label_first"].min() > prev_hi
            prev_hi = s["label_date"].max()
        done.append(f"{target}: no look-ahead at days {list(cut_days)}; 200 labels match prices; "
                    f"split ordered and disjoint ({dropped} straddling windows dropped)")
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", default=DEFAULT_OUT)
    p.add_argument("--target", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--calib", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="run the self-checks first")
    args = p.parse_args(argv)
    if args.check:
        for line in self_check():
            print("check ok:", line, flush=True)
    panel = build_panel()
    import json

    for target in args.target:
        paths = write_target(args.out_dir, target, args.calib, args.seed, panel)
        with open(paths["norm"]) as fh:
            info = json.load(fh)
        for name, s in info["splits"].items():
            print(f"{target:<9} {name:<5} {s['samples']:>7} windows, label days {s['first_label_day']}..{s['last_label_day']}, "
                  f"positive {s['positive_fraction']:.4f}", flush=True)
        print(f"{target}: dropped {info['dropped_straddling_windows']} straddling windows; wrote {json.dumps(paths)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
