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


# ------------------------------------------------- SNN-stage graphs, one per op case
def neuron(g: Graph, h, c: int, r, *, per="channel", reset="subtract", scale="threshold"):
    """An if_neuron on value h with c channels and random thresholds / initial potentials."""
    infer_shapes(g)
    shape = h.shape
    if per == "layer":
        th = np.array(r.uniform(0.3, 1.0))
    elif per == "channel":
        th = r.uniform(0.3, 1.0, (c,) + (1,) * (len(shape) - 1))
    else:
        th = r.uniform(0.3, 1.0, shape)
    v0 = r.uniform(0, 0.5, shape) * th
    return g.add_node("if_neuron", [h], {"reset": reset, "spike_scale": scale}, {"threshold": th, "v_init": v0}).output


def finish(g: Graph, h) -> Graph:
    g.set_outputs([g.add_node("readout", [h]).output])
    infer_shapes(g)
    verify(g, "snn")
    return g


def conv(g, h, cout, cin, r, **attrs):
    p = conv_params(r, cout, cin)
    return g.add_node("conv", [h], attrs, p).output


def graph_with(op_case: str) -> Graph:
    """A small SNN exercising ``op_case`` between spiking layers."""
    r = rng(3)
    g = Graph(op_case, "snn")
    x = g.add_input("x", (2, 8, 8))
    h = conv(g, x, 4, 2, r, pads=[1, 1, 1, 1])
    h = neuron(g, h, 4, r)
    if op_case == "conv-strided-grouped-dilated":
        p = {"weight": r.normal(0, 0.5, (4, 2, 3, 3)), "bias": r.normal(0, 0.1, 4)}
        h = g.add_node("conv", [h], {"pads": [2, 2, 2, 2], "strides": [2, 2], "dilations": [2, 2], "groups": 2}, p).output
    elif op_case == "conv-asymmetric-pads":
        h = conv(g, h, 4, 4, r, pads=[0, 1, 1, 2])
    elif op_case == "conv-transpose":
        p = {"weight": r.normal(0, 0.4, (4, 3, 3, 3)), "bias": r.normal(0, 0.1, 3)}
        h = g.add_node("conv_transpose", [h], {"strides": [2, 2], "output_padding": [1, 1]}, p).output
    elif op_case == "conv-transpose-cropped":
        p = {"weight": r.normal(0, 0.4, (4, 3, 2, 2)), "bias": r.normal(0, 0.1, 3)}
        h = g.add_node("conv_transpose", [h], {"strides": [2, 2], "pads": [1, 0, 0, 1]}, p).output
    elif op_case == "avg-pool":
        h = g.add_node("avg_pool", [h], {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": True}).output
    elif op_case == "avg-pool-asymmetric":
        h = g.add_node("avg_pool", [h], {"kernel": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": True}).output
    elif op_case == "spiking-max-pool":
        h = g.add_node("spiking_max_pool", [h], {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}).output
    elif op_case == "residual-add":
        b = conv(g, h, 4, 4, r, pads=[1, 1, 1, 1])
        b = neuron(g, b, 4, r)
        h = g.add_node("add", [h, b], {"coeffs": [[0.5, 1.0, 2.0, 1.5], 1.0]}).output
    elif op_case == "concat":
        b = conv(g, h, 3, 4, r, pads=[1, 1, 1, 1])
        b = neuron(g, b, 3, r, per="layer")
        h = g.add_node("concat", [h, b], {"axis": 1}).output
    elif op_case == "upsample":
        h = g.add_node("upsample", [h], {"scales": [2, 2]}).output
    elif op_case == "zero-pad":  # explicit padding read by an unpadded convolution
        h = g.add_node("pad", [h], {"pads": [1, 0, 2, 1]}).output
        h = conv(g, h, 4, 4, r)
    elif op_case == "affine":
        h = g.add_node("affine", [h], {}, {"scale": r.uniform(0.5, 2, (4, 1, 1)), "shift": r.normal(0, 0.1, (4, 1, 1))}).output
    elif op_case == "flatten-linear":
        h = g.add_node("global_avg_pool", [h], {"keepdims": True}).output
        h = g.add_node("reshape", [h], {"shape": [4]}).output
        h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (6, 4)), "bias": r.normal(0, 0.1, 6)}).output
    elif op_case == "per-neuron-threshold":
        h = conv(g, h, 4, 4, r, pads=[1, 1, 1, 1])
        h = neuron(g, g.add_node("affine", [h], {}, {"scale": np.array(1.0), "shift": np.array(0.1)}).output, 4, r, per="neuron")
    elif op_case == "hard-reset-unit-spikes":
        h = conv(g, h, 4, 4, r, pads=[1, 1, 1, 1])
        h = neuron(g, h, 4, r, reset="zero", scale="unit")
    else:
        raise KeyError(op_case)
    infer_shapes(g)
    c = h.shape[0]
    h = neuron(g, h, c, r)  # every op's output feeds spiking neurons again
    return finish(g, h)


OP_CASES = [
    "conv-strided-grouped-dilated", "conv-asymmetric-pads", "conv-transpose", "conv-transpose-cropped", "avg-pool",
    "avg-pool-asymmetric", "spiking-max-pool", "residual-add", "concat", "upsample", "zero-pad", "affine", "flatten-linear",
    "per-neuron-threshold", "hard-reset-unit-spikes",
]  # fmt: skip




def tiny_vit(seed: int = 0, *, dim: int = 8, heads: int = 2, tokens: int = 4, act: str = "gelu") -> Graph:
    """A pre-LN ViT on [1, 8, 8] images, as the importers produce it: 4×4 patch conv,
    tokens [N, D] with a class token and position embedding, one attention block
    (qkv linear, per-head split, Q K^T scaled, softmax, A V, projection, residual) and a
    GELU (or ReLU) MLP block, final layer norm, class token, linear head (3 classes)."""
    r = rng(seed)
    g = Graph("tiny_vit")
    n, hd = tokens + 1, dim // heads
    x = g.add_input("x", (1, 8, 8))
    h = g.add_node("conv", [x], {"strides": [4, 4]}, conv_params(r, dim, 1, k=4), "patch").output
    h = g.add_node("reshape", [h], {"shape": [dim, tokens]}, name="flat").output
    h = g.add_node("transpose", [h], {"perm": [0, 2, 1]}, name="tokens").output
    h = g.add_node("concat_constant", [h], {"axis": 1}, {"value": r.normal(0, 0.5, (1, dim))}, "cls").output
    h = g.add_node("affine", [h], {}, {"scale": np.ones(1), "shift": r.normal(0, 0.3, (n, dim))}, "pos").output

    def ln(v, name):
        return g.add_node("layer_norm", [v], {}, {"scale": r.uniform(0.5, 1.5, dim), "bias": r.normal(0, 0.1, dim)}, name).output

    def lin(v, fin, fout, name):
        return g.add_node("linear", [v], {}, {"weight": r.normal(0, 1 / np.sqrt(fin), (fout, fin)), "bias": r.normal(0, 0.1, fout)}, name).output

    a = ln(h, "norm1")
    qkv = lin(a, dim, 3 * dim, "qkv")
    qkv = g.add_node("reshape", [qkv], {"shape": [n, 3, heads, hd]}, name="qkv_split").output
    qkv = g.add_node("transpose", [qkv], {"perm": [0, 2, 3, 1, 4]}, name="qkv_heads").output  # [3, H, N, hd]
    q, k, v = (g.add_node("select", [qkv], {"axis": 1, "index": i}, name=f"{c}").output for i, c in enumerate("qkv"))
    kt = g.add_node("transpose", [k], {"perm": [0, 1, 3, 2]}, name="kt").output
    s = g.add_node("matmul", [q, kt], name="scores").output
    s = g.add_node("affine", [s], {}, {"scale": np.array(hd**-0.5), "shift": np.zeros(1)}, "scale").output
    p = g.add_node("softmax", [s], {"axis": -1}, name="attn").output
    o = g.add_node("matmul", [p, v], name="av").output
    o = g.add_node("transpose", [o], {"perm": [0, 2, 1, 3]}, name="merge").output
    o = g.add_node("reshape", [o], {"shape": [n, dim]}, name="merge_flat").output
    o = lin(o, dim, dim, "proj")
    h = g.add_node("add", [h, o], name="res1").output
    m = lin(ln(h, "norm2"), dim, 2 * dim, "fc1")
    m = g.add_node("gelu" if act == "gelu" else "relu", [m], name="act").output
    m = lin(m, 2 * dim, dim, "fc2")
    h = g.add_node("add", [h, m], name="res2").output
    h = ln(h, "norm")
    h = g.add_node("select", [h], {"axis": 1, "index": 0}, name="cls_out").output
    h = lin(h, dim, 3, "head")
    g.set_outputs([h])
    infer_shapes(g)
    verify(g)
    return g
