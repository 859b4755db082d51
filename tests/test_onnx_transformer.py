"""Transformers through the ONNX frontend: attention blocks, nn.TransformerEncoderLayer,
nn.MultiheadAttention and a tiny ViT, exported by torch's legacy and dynamo exporters, import
into the IR (``transpose``, ``select``, ``slice``, ``matmul``, ``softmax``, ``layer_norm``,
``gelu``, ``concat_constant``, ...) and evaluate like onnxruntime on batches of several
samples (the exports have a dynamic batch dimension). Hand-built ONNX graphs cover the
exporters' decomposed forms (LayerNormalization, GELU, SiLU) and the refusals.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.onnx import import_onnx
from _onnx_models import check_against_onnxruntime, ops
from snnc.ir import Graph, run_ann

TOL = 1e-4
DIM = 16


# ==================================================================== helpers
def check(model: onnx.ModelProto | str, *, n: int = 4, seed: int = 0) -> Graph:
    """Import ``model`` and check the IR against onnxruntime on random inputs."""
    return check_against_onnxruntime(model, tol=TOL, n=n, seed=seed)


def make_model(
    nodes: list[onnx.NodeProto], in_shape: list, inits: dict[str, np.ndarray] | None = None, *, opset: int = 17
) -> onnx.ModelProto:
    """A one-input model ``x`` -> ``y``; a symbolic batch dim unless ``in_shape[0]`` is an int."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def f32(v: float) -> np.ndarray:
    return np.array(v, np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ============================================================== torch models
class Attention(nn.Module):
    """Attention written out by hand: qkv Linear, reshape / permute, q @ k^T * scale,
    softmax, @ v, transpose, reshape, projection (``chunk``: q, k, v from Split)."""

    def __init__(self, heads: int = 1, chunk: bool = False):
        super().__init__()
        self.heads, self.chunk = heads, chunk
        self.scale = (DIM // heads) ** -0.5
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads
        if self.chunk:
            q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        else:
            qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class Wrapped(nn.Module):
    """``forward(x) = inner(x)``: the legacy exporter cannot trace nn.TransformerEncoderLayer's
    own signature (its is_causal default becomes a tensor)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(DIM, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class TinyViT(nn.Module):
    """Conv patch embedding of a [1, 28, 28] image, class token, position embedding, one
    pre-LN block (GELU MLP), final LayerNorm, the class token's head."""

    def __init__(self, approximate: str = "none", patch: int = 7):
        super().__init__()
        n = (28 // patch) ** 2
        self.embed = nn.Conv2d(1, DIM, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM))
        self.pos = nn.Parameter(torch.randn(1, n + 1, DIM))
        self.norm1, self.attn = nn.LayerNorm(DIM), Attention(2)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(approximate=approximate), nn.Linear(2 * DIM, DIM))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x)[:, 0])


def encoder_layer(activation: str = "gelu", norm_first: bool = True) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        DIM, 2, dim_feedforward=32, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )


TOKENS = (5, DIM)
MODELS = {
    "attention_1head": (lambda: Attention(1), TOKENS),
    "attention_2heads": (lambda: Attention(2), TOKENS),
    "attention_chunk": (lambda: Attention(2, chunk=True), TOKENS),
    "encoder_layer_gelu_pre": (lambda: Wrapped(encoder_layer("gelu", True)), TOKENS),
    "encoder_layer_gelu_post": (lambda: Wrapped(encoder_layer("gelu", False)), TOKENS),
    "encoder_layer_relu_post": (lambda: Wrapped(encoder_layer("relu", False)), TOKENS),
    "encoder_2layers": (lambda: nn.TransformerEncoder(encoder_layer(), 2, enable_nested_tensor=False), TOKENS),
    "multihead_attention": (SelfAttention, TOKENS),
    "vit_gelu_erf": (lambda: TinyViT("none"), (1, 28, 28)),
    "vit_gelu_tanh": (lambda: TinyViT("tanh"), (1, 28, 28)),
}

# The IR each model imports as (both exporters give the same).
_ATTN = {"linear": 2, "matmul": 2, "softmax": 1}
_LAYER = {"linear": 4, "matmul": 2, "softmax": 1, "layer_norm": 2, "add": 2}
_VIT = {"conv": 1, "concat_constant": 1, "linear": 5, "matmul": 2, "softmax": 1, "layer_norm": 3, "add": 2, "gelu": 1}
EXPECTED = {
    "attention_1head": _ATTN,
    "attention_2heads": _ATTN,
    "attention_chunk": {**_ATTN, "slice": 3},
    "encoder_layer_gelu_pre": {**_LAYER, "gelu": 1},
    "encoder_layer_gelu_post": {**_LAYER, "gelu": 1},
    "encoder_layer_relu_post": {**_LAYER, "relu": 1},
    "encoder_2layers": {k: 2 * v for k, v in {**_LAYER, "gelu": 1}.items()},
    "multihead_attention": _ATTN,
    "vit_gelu_erf": _VIT,
    "vit_gelu_tanh": _VIT,
}
# What else may appear: layout ops and scalings.
LAYOUT_OPS = {"transpose", "reshape", "select", "slice", "affine"}


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():  # LayerNorm parameters that are not 1 and 0, so mistakes show
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model, shape


def torch_export(model: nn.Module, shape: tuple[int, ...], exporter: str, opset: int | None = None) -> onnx.ModelProto:
    """Export with a dynamic batch dim (exported at batch 2). exporter: legacy (opset 17
    unless given) | dynamo (the exporter's own opset unless given: 20 for torch 2.13, with
    the Gelu op and Split's num_outputs)."""
    x = torch.randn(2, *shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            buf = io.BytesIO()
            dynamic = {"x": {0: "batch"}}
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset or 17, input_names=["x"], dynamic_axes=dynamic)
            return onnx.load_from_string(buf.getvalue())
        pytest.importorskip("onnxscript")
        kw = {} if opset is None else {"opset_version": opset}
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], dynamic_shapes=({0: torch.export.Dim("batch")},), **kw)
        return program.model_proto


@functools.cache
def exported(name: str, exporter: str, opset: int | None = None) -> bytes:
    model, shape = build(name)
    return torch_export(model, shape, exporter, opset).SerializeToString()


def exported_model(name: str, exporter: str, opset: int | None = None) -> onnx.ModelProto:
    return onnx.load_from_string(exported(name, exporter, opset))


# ====================================================== torch models, both exporters
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformer_matches_onnxruntime(name, exporter):
    graph = check(exported_model(name, exporter))
    got = ops(graph)
    for op, count in EXPECTED[name].items():
        assert got[op] == count, (op, got)
    assert set(got) <= set(EXPECTED[name]) | LAYOUT_OPS, got


@pytest.mark.parametrize("name", sorted(MODELS))
def test_both_exporters_give_the_same_ir_and_torchs_output(name):
    legacy = import_onnx(exported_model(name, "legacy"))
    dynamo = import_onnx(exported_model(name, "dynamo"))
    assert ops(legacy) == ops(dynamo)
    model, shape = build(name)
    x = np.random.default_rng(3).standard_normal((5, *shape)).astype(np.float32)  # another batch size than exported
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for graph in (legacy, dynamo):
        np.testing.assert_allclose(run_ann(graph, x)[0], want, atol=TOL, rtol=TOL)


def test_vit_gelu_variants_and_class_token():
    erf = import_onnx(exported_model("vit_gelu_erf", "legacy"))
    tanh = import_onnx(exported_model("vit_gelu_tanh", "dynamo"))
    assert [n.attr("approximate") for n in erf.find("gelu")] == ["none"]
    assert [n.attr("approximate") for n in tanh.find("gelu")] == ["tanh"]
    (cc,) = erf.find("concat_constant")
    assert cc.attr("axis") == 1 and cc.attr("position") == "before" and cc.params["value"].shape == (1, DIM)
    assert erf.outputs[0].shape == (10,)
    assert any("fused decomposed ops" in n and "gelu" in n for n in erf.meta["notices"])


@pytest.mark.parametrize("name", ["encoder_layer_gelu_pre", "vit_gelu_tanh"])
def test_opset_14_decomposed_layer_norm_and_gelu(name):
    # Below opset 17 the legacy exporter writes LayerNorm as ReduceMean / Sub / Pow /
    # ReduceMean / Add / Sqrt / Div / Mul / Add, and GELU as its erf or tanh formula.
    model = exported_model(name, "legacy", 14)
    assert {"ReduceMean", "Pow", "Sqrt"} <= {n.op_type for n in model.graph.node}
    graph = check(model)
    assert ops(graph)["layer_norm"] == EXPECTED[name]["layer_norm"] and ops(graph)["gelu"] == 1
    assert ops(graph) == ops(import_onnx(exported_model(name, "legacy")))


@pytest.mark.parametrize("name", ["vit_gelu_tanh", "encoder_layer_gelu_post"])
def test_dynamo_at_opset_17(name):
    # Converted down to opset 17, the dynamo export writes GELU out (Pow / Tanh, Div / Erf).
    model = exported_model(name, "dynamo", 17)
    assert "Gelu" not in {n.op_type for n in model.graph.node}
    graph = check(model)
    assert ops(graph) == ops(import_onnx(exported_model(name, "dynamo")))


def test_dynamo_split_converted_down_to_opset_17_is_refused_clearly():
    # onnx's version converter keeps Split's num_outputs (opset 18) in an opset 17 model.
    model = exported_model("attention_chunk", "dynamo", 17)
    if not any(n.op_type == "Split" and any(a.name == "num_outputs" for a in n.attribute) for n in model.graph.node):
        pytest.skip("this torch version converts Split down correctly")
    with pytest.raises(DataError, match="Split node .*num_outputs.*opset_version 18 or newer"):
        import_onnx(model)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", ["vit_gelu_erf", "multihead_attention"])
def test_fixed_batch_export(name, batch):
    # Without dynamic axes the legacy exporter writes the batch size into the Reshape
    # targets (for a batch of 1 they do not say where the batch is) and the class token's
    # Expand; 5 samples are evaluated in chunks of the fixed batch.
    model, shape = build(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(batch, *shape),), buf, dynamo=False, opset_version=17, input_names=["x"])
    graph = check(onnx.load_from_string(buf.getvalue()), n=5)
    assert ops(graph) == ops(import_onnx(exported_model(name, "legacy")))


def test_silu_mlp_from_torch():
    model = nn.Sequential(nn.Linear(DIM, 24), nn.SiLU(), nn.Linear(24, DIM)).eval()
    graph = check(torch_export(model, TOKENS, "legacy"))
    assert ops(graph) == Counter({"linear": 2, "silu": 1})


# ======================================================= hand-built GELU / SiLU forms
def _gelu_nodes(form: str) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    N = helper.make_node
    inits = {"half": f32(0.5), "one": f32(1.0)}
    if form == "erf_div_half_last":  # torch legacy: x / 1.414 -> Erf -> +1 -> * x -> * 0.5
        inits["s2"] = f32(math.sqrt(2))
        nodes = [N("Div", ["x", "s2"], ["u"]), N("Erf", ["u"], ["e"]), N("Add", ["e", "one"], ["a"]),
                 N("Mul", ["x", "a"], ["m"]), N("Mul", ["m", "half"], ["y"])]
    elif form == "erf_mul_half_first":  # 0.5 * x first, x * 0.7071 inside
        inits["r2"] = f32(math.sqrt(0.5))
        nodes = [N("Mul", ["x", "half"], ["hx"]), N("Mul", ["r2", "x"], ["u"]), N("Erf", ["u"], ["e"]),
                 N("Add", ["one", "e"], ["a"]), N("Mul", ["hx", "a"], ["y"])]
    elif form == "erf_half_then_x":  # dynamo: 0.5 * (1 + erf) then * x
        inits["s2"] = f32(math.sqrt(2))
        nodes = [N("Div", ["x", "s2"], ["u"]), N("Erf", ["u"], ["e"]), N("Add", ["e", "one"], ["a"]),
                 N("Mul", ["half", "a"], ["m"]), N("Mul", ["x", "m"], ["y"])]
    elif form == "tanh_pow":  # dynamo: Pow(x, 3)
        inits.update(three=f32(3.0), c=f32(0.044715), k=f32(math.sqrt(2 / math.pi)))
        nodes = [N("Pow", ["x", "three"], ["p"]), N("Mul", ["c", "p"], ["cp"]), N("Add", ["x", "cp"], ["s"]),
                 N("Mul", ["k", "s"], ["u"]), N("Tanh", ["u"], ["t"]), N("Add", ["t", "one"], ["a"]),
                 N("Mul", ["half", "a"], ["m"]), N("Mul", ["x", "m"], ["y"])]
    else:  # tanh_cube: legacy x * (x * x)
        inits.update(c=f32(0.044715), k=f32(math.sqrt(2 / math.pi)))
        nodes = [N("Mul", ["x", "x"], ["x2"]), N("Mul", ["x", "x2"], ["x3"]), N("Mul", ["c", "x3"], ["cp"]),
                 N("Add", ["x", "cp"], ["s"]), N("Mul", ["k", "s"], ["u"]), N("Tanh", ["u"], ["t"]),
                 N("Add", ["one", "t"], ["a"]), N("Mul", ["x", "a"], ["m"]), N("Mul", ["half", "m"], ["y"])]
    return nodes, inits


@pytest.mark.parametrize("form", ["erf_div_half_last", "erf_mul_half_first", "erf_half_then_x", "tanh_pow", "tanh_cube"])
def test_gelu_exporter_forms(form):
    nodes, inits = _gelu_nodes(form)
    graph = check(make_model(nodes, ["N", 3, 8], inits))
    (node,) = graph.nodes
    assert node.op == "gelu" and node.attr("approximate") == ("tanh" if form.startswith("tanh") else "none")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_op_of_opset_20(approximate):
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    graph = check(make_model([node], ["N", 4, 6], opset=20))
    assert [(n.op, n.attr("approximate")) for n in graph.nodes] == [("gelu", approximate)]


@pytest.mark.parametrize("order", [["x", "s"], ["s", "x"]])
def test_silu(order):
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", order, ["y"])]
    graph = check(make_model(nodes, ["N", 7]))
    assert [n.op for n in graph.nodes] == ["silu"]


def test_erf_outside_gelu_is_rejected_clearly():
    nodes = [helper.make_node("Erf", ["x"], ["e"], name="lonely_erf"), helper.make_node("Add", ["e", "one"], ["y"])]
    with pytest.raises(UnsupportedOpError, match="'Erf' at node 'lonely_erf'.*not part of GELU: its input is not x / sqrt\\(2\\).*nn.GELU"):
        import_onnx(make_model(nodes, ["N", 5], {"one": f32(1.0)}))


def test_sigmoid_gate_is_not_silu():
    # x * sigmoid(2 x): a gate, not SiLU.
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Sigmoid", ["x2"], ["s"], name="gate"),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    with pytest.raises(UnsupportedOpError, match="'Sigmoid' at node 'gate'.*not part of SiLU"):
        import_onnx(make_model(nodes, ["N", 5], {"two": f32(2.0)}))


# ====================================================== hand-built LayerNormalization
def _layer_norm_nodes(variant: str, axes: list[int], opset: int) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    N = helper.make_node
    inits: dict[str, np.ndarray] = {"eps": f32(1e-5), "two": f32(2.0), "one": f32(1.0), "w": rand(8, seed=3), "b": rand(8, seed=4)}

    def mean(i: str, o: str) -> onnx.NodeProto:
        if opset >= 18:
            inits["axes"] = i64(*axes)
            return N("ReduceMean", [i, "axes"], [o])
        return N("ReduceMean", [i], [o], axes=axes)

    nodes = [mean("x", "mu"), N("Sub", ["x", "mu"], ["d"])]
    nodes.append(N("Mul", ["d", "d"], ["sq"]) if variant == "mul_square" else N("Pow", ["d", "two"], ["sq"]))
    nodes += [mean("sq", "var"), N("Add", ["var", "eps"], ["ve"]), N("Sqrt", ["ve"], ["std"])]
    if variant == "reciprocal":
        nodes += [N("Reciprocal", ["std"], ["inv"]), N("Mul", ["inv", "d"], ["n"])]
    elif variant == "div_one":
        nodes += [N("Div", ["one", "std"], ["inv"]), N("Mul", ["d", "inv"], ["n"])]
    else:
        nodes.append(N("Div", ["d", "std"], ["n"]))
    if variant == "no_affine":
        nodes.append(N("Identity", ["n"], ["y"]))
    else:
        nodes += [N("Mul", ["n", "w"], ["nw"]), N("Add", ["b", "nw"], ["y"])]
    return nodes, inits


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("variant", ["div", "mul_square", "reciprocal", "div_one", "no_affine"])
def test_decomposed_layer_norm(variant, opset):
    nodes, inits = _layer_norm_nodes(variant, [-1], opset)
    graph = check(make_model(nodes, ["N", 3, 8], inits, opset=opset))
    assert ops(graph) == Counter({"layer_norm": 1})
    (ln,) = graph.find("layer_norm")
    assert ln.attr("epsilon") == pytest.approx(1e-5)
    if variant != "no_affine":
        np.testing.assert_array_equal(ln.params["scale"], inits["w"])


def test_decomposed_layer_norm_over_another_axis_is_rejected():
    nodes, inits = _layer_norm_nodes("div", [1], 17)
    nodes[0].name = "mean_over_tokens"
    with pytest.raises(UnsupportedOpError, match="'ReduceMean' at node 'mean_over_tokens'.*axes \\[1\\].*last axis only"):
        import_onnx(make_model(nodes, ["N", 8, 8], inits))


def test_layer_normalization_op_over_two_axes_is_rejected():
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=1, name="ln2")
    with pytest.raises(UnsupportedOpError, match="'ln2'.*axes \\[1, 2\\].*last axis only"):
        import_onnx(make_model([node], ["N", 3, 8], {"w": rand(3, 8), "b": rand(3, 8)}))


def test_layer_normalization_op():
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1, epsilon=1e-3)
    graph = check(make_model([node], ["N", 3, 8], {"w": rand(8), "b": rand(8)}))
    assert [(n.op, n.attr("epsilon")) for n in graph.nodes] == [("layer_norm", pytest.approx(1e-3))]


# ====================================================== hand-built layout ops
def test_split_squeeze_unsqueeze_slice_and_position_embedding():
    N = helper.make_node
    nodes = [
        N("Add", ["x", "pos"], ["xp"]),  # [N, D] position embedding on [batch, N, D] tokens
        N("Split", ["xp", "sizes"], ["a", "b"], axis=2),
        N("Unsqueeze", ["a", "ax1"], ["a1"]),  # [batch, 1, 4, 3]
        N("Squeeze", ["a1", "ax1"], ["a2"]),
        N("Slice", ["b", "st", "en", "axs", "steps"], ["bs"]),  # b[:, 1:4, ::2]
        N("Slice", ["a2", "st0", "en0", "axs0"], ["as"]),  # a2[:, 1:4] (and the whole batch axis)
        N("Concat", ["as", "bs"], ["y"], axis=-1),
    ]
    inits = {"pos": rand(4, 8), "sizes": i64(3, 5), "ax1": i64(1), "st": i64(1, 0), "en": i64(4, 5), "axs": i64(1, 2),
             "steps": i64(1, 2), "st0": i64(0, 1), "en0": i64(2**62, 4), "axs0": i64(0, 1)}
    graph = check(make_model(nodes, ["N", 4, 8], inits))
    assert graph.outputs[0].shape == (3, 6)
    assert ops(graph)["slice"] == 5 and ops(graph)["affine"] == 1


def test_expand_of_a_constant_to_the_batch_is_concat_constant_after():
    N = helper.make_node
    nodes = [
        N("Shape", ["x"], ["shp"]),
        N("Slice", ["shp", "z", "one"], ["b"]),
        N("Concat", ["b", "ones"], ["eshape"], axis=0),
        N("Expand", ["tok", "eshape"], ["toks"]),  # [batch, 2, 6]
        N("Concat", ["x", "toks"], ["y"], axis=1),
    ]
    inits = {"z": i64(0), "one": i64(1), "ones": i64(1, 1), "tok": rand(1, 2, 6)}
    graph = check(make_model(nodes, ["N", 3, 6], inits))
    (cc,) = graph.nodes
    assert cc.op == "concat_constant" and cc.attr("position") == "after" and graph.outputs[0].shape == (5, 6)


def test_batch_moved_by_transpose_and_back():
    # [batch, N, D] -> [N, batch, D] -> Linear -> [batch, N, D]: one linear, no layout op.
    N = helper.make_node
    nodes = [N("Transpose", ["x"], ["t"], perm=[1, 0, 2]), N("MatMul", ["t", "w"], ["m"]), N("Add", ["m", "b"], ["l"]),
             N("Transpose", ["l"], ["y"], perm=[1, 0, 2])]
    graph = check(make_model(nodes, ["N", 5, 6], {"w": rand(6, 4), "b": rand(4)}))
    assert ops(graph) == Counter({"linear": 1})


# ============================================================ refusals
def _refuse(nodes, in_shape, inits, match):
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(make_model(nodes, in_shape, inits))


def test_batch_axis_reaching_a_conv_is_rejected():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3], name="swap"),
             helper.make_node("Conv", ["t", "w"], ["y"], name="conv")]
    _refuse(nodes, ["N", 2, 4, 4], {"w": rand(3, 2, 1, 1)},
            r"'Conv' at node 'conv'.*shape \[2, batch, 4, 4\] \(Transpose node 'swap' moved the batch axis\).*batch axis alone")


def test_slicing_or_indexing_the_batch_is_rejected():
    slice_batch = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="first_two")
    _refuse([slice_batch], ["N", 3], {"s": i64(0), "e": i64(2), "a": i64(0)}, "'first_two'.*slices the batch axis")
    gather_batch = helper.make_node("Gather", ["x", "i"], ["y"], axis=0, name="pick")
    _refuse([gather_batch], ["N", 3], {"i": np.int64(0)}, "'pick'.*picks samples")


def test_matmul_over_the_batch_axis_is_rejected():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]), helper.make_node("MatMul", ["x", "t"], ["y"], name="mm")]
    _refuse(nodes, ["N", 4, 4], {}, "'mm'.*batch axis must not be a matrix axis")


def test_gemm_of_two_computed_tensors_is_rejected():
    node = helper.make_node("Gemm", ["x", "x"], ["y"], name="g")
    _refuse([node], ["N", 4], {}, "'g'.*contracts over the batch axis")


def test_gather_of_an_index_list_is_rejected():
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1, name="take")
    _refuse([node], ["N", 5, 3], {"i": i64(0, 2)}, "'take'.*2 indices")
