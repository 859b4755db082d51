"""Hand-built IR graphs for structural and numerical pass/simulator tests."""

from __future__ import annotations

import numpy as np

from snnc.ir import Graph, infer_shapes, verify


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv_params(r: np.random.Generator, cout: int, cin: int, k: int = 3, nd: int = 2) -> dict[str, np.ndarray]:
    fan_in = cin * k**nd
    return {"weight": r.normal(0, np.sqrt(2 / fan_in), (cout, cin) + (k,) * nd), "bias": r.normal(0, 0.1, cout)}


def bn_params(r: np.random.Generator, c: int) -> dict[str, np.ndarray]:
    return {"scale": r.uniform(0.5, 1.5, c), "bias": r.normal(0, 0.2, c), "mean": r.normal(0, 0.3, c), "var": r.uniform(0.5, 2.0, c)}


def small_cnn(seed: int = 0, *, bn: bool = True, maxpool: bool = False, residual: bool = False) -> Graph:
    """conv-bn-relu x2 (+ residual add), pool, global pool, linear: an ANN-stage graph."""
    r = rng(seed)
    g = Graph("small_cnn")
    x = g.add_input("x", (1, 12, 12))
    h = g.add_node("conv", [x], {"pads": [1, 1, 1, 1]}, conv_params(r, 6, 1), "conv1").output
    if bn:
        h = g.add_node("batch_norm", [h], {"epsilon": 1e-5}, bn_params(r, 6), "bn1").output
    h = skip = g.add_node("relu", [h], name="relu1").output
    h = g.add_node("conv", [h], {"pads": [1, 1, 1, 1]}, conv_params(r, 6, 6), "conv2").output
    if bn:
        h = g.add_node("batch_norm", [h], {"epsilon": 1e-5}, bn_params(r, 6), "bn2").output
    if residual:
        h = g.add_node("add", [h, skip], name="add").output
    h = g.add_node("relu", [h], name="relu2").output
    pool = "max_pool" if maxpool else "avg_pool"
    h = g.add_node(pool, [h], {"kernel": [2, 2]}, name="pool").output
    h = g.add_node("global_avg_pool", [h], {"keepdims": False}, name="gap").output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.5, (4, 6)), "bias": r.normal(0, 0.1, 4)}, "fc").output
    g.set_outputs([h])
    infer_shapes(g)
    verify(g)
    return g


def images(n: int, seed: int = 1, shape=(1, 12, 12)) -> np.ndarray:
    return rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def fashion_or_noise(n: int, seed: int) -> np.ndarray:
    """``n`` Fashion-MNIST test images (block ``seed``), or uniform noise of that shape where
    the Debian data package is missing (checks using it are structural or equivalences)."""
    try:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from examples.fashion_mnist.data import load_fashion_mnist

        x, _ = load_fashion_mnist("test")
        return x[seed * n : (seed + 1) * n]
    except Exception:
        return np.random.default_rng(seed).uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
