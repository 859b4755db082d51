"""The ONNX frontend treats the file as untrusted (issue 15, item 7).

* One golden test per class of malformed ONNX: ``import_model`` raises the expected
  :class:`~snnc.errors.SnncError` subclass with a message naming the tensor or node, and
  ``snnc convert`` / ``inspect`` / ``check`` exit 2 with one line and no traceback.
* A seeded fuzz of one-change mutants of a small CNN (tests/fuzzing/onnx_mutants.py): no
  exception other than an SnncError, no mutant slower than 5 s.
* The dynamo exporter's ``torch.flatten`` of a channels-last tensor (``Reshape([-1])`` +
  ``Range``/``Mul``/``Unsqueeze``/``Add``/``Gather`` + ``Reshape``) imports, and converts to
  exactly the SNN of its legacy-exporter twin.
"""

from __future__ import annotations

import collections
import contextlib
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fuzzing.onnx_mutants import base_model, classify, mutants
from onnx import TensorProto, helper, numpy_helper

import snnc
from snnc.cli import main
from snnc.errors import DataError, SnncError, UnsupportedOpError
from snnc.frontends import import_model
from snnc.frontends.check import check_import


# ===================================================================== helpers
def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def replace_init(model: onnx.ModelProto, name: str, tensor: onnx.TensorProto) -> None:
    init(model, name).CopyFrom(tensor)


def const_node(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr))


def clip_max_from(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
    """Compute the Clip's max ("six") with ``nodes`` instead of the initializer."""
    model.graph.initializer.remove(init(model, "six"))
    for n in reversed(nodes):
        model.graph.node.insert(0, n)


# ============================================================ malformed models
# Each case mutates the fuzz base model (or writes files next to it) and names the error
# class and a message fragment.
def _dims_mismatch(m, d):
    init(m, "c1.w").dims[0] = 5


def _huge_dims(m, d):
    init(m, "c1.w").dims[:] = [10**6, 10**6, 1, 1]


def _undefined_type(m, d):
    init(m, "fc.b").data_type = TensorProto.UNDEFINED


def _string_type(m, d):
    replace_init(m, "fc.b", helper.make_tensor("fc.b", TensorProto.STRING, [2], [b"a", b"b"]))


def _complex_type(m, d):
    replace_init(m, "fc.b", numpy_helper.from_array(np.zeros(8, np.complex64), "fc.b"))


def _typed_field_short(m, d):
    replace_init(m, "fc.b", TensorProto(name="fc.b", data_type=TensorProto.FLOAT, dims=[8], float_data=[1.0, 2.0, 3.0]))


def _truncated_raw(m, d):
    t = init(m, "c2.w")
    t.raw_data = t.raw_data[:-4]


def _node_without_outputs(m, d):
    del node(m, "relu1").output[:]


def _avgpool_without_kernel(m, d):
    n = node(m, "pool2")
    for a in [a for a in n.attribute if a.name == "kernel_shape"]:
        n.attribute.remove(a)


def _add_one_input(m, d):
    del node(m, "residual").input[1]


def _sub_one_input(m, d):
    del node(m, "norm_sub").input[1]


def _conv_without_weight(m, d):
    del node(m, "conv1").input[1:]


def _conv_weight_from_input(m, d):
    node(m, "conv2").input[1] = "p1"


def _output_not_produced(m, d):
    m.graph.output[0].name = "nowhere"


def _constant_of_shape_huge(m, d):
    clip_max_from(m, [const_node("cshape", np.array([10**6, 10**6], np.int64)), helper.make_node("ConstantOfShape", ["cshape"], ["six"])])


def _expand_huge(m, d):
    clip_max_from(m, [const_node("cshape", np.array([10**6, 10**6], np.int64)), helper.make_node("Expand", ["zero", "cshape"], ["six"])])


def _tile_huge(m, d):
    clip_max_from(m, [const_node("reps", np.array([10**12], np.int64)), const_node("vec", np.array([6.0], np.float32)),
                      helper.make_node("Tile", ["vec", "reps"], ["six"])])  # fmt: skip


def _constant_huge(m, d):
    clip_max_from(m, [helper.make_node("Constant", [], ["six"], value=TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[10**12]))])


def _fold_reshape_mismatch(m, d):
    clip_max_from(m, [const_node("v", np.arange(6, dtype=np.float32)), const_node("t", np.array([4, 4], np.int64)),
                      helper.make_node("Reshape", ["v", "t"], ["six"])])  # fmt: skip


def _nan_weight(m, d):
    w = numpy_helper.to_array(init(m, "c2.w")).copy()
    w[0, 0, 0, 0] = np.nan
    replace_init(m, "c2.w", numpy_helper.from_array(w, "c2.w"))


def _inf_bias(m, d):
    b = numpy_helper.to_array(init(m, "fc.b")).copy()
    b[3] = np.inf
    replace_init(m, "fc.b", numpy_helper.from_array(b, "fc.b"))


def _bn_negative_epsilon(m, d):
    next(a for a in node(m, "bn1").attribute if a.name == "epsilon").f = -1.0


def _reshape_float_target(m, d):
    replace_init(m, "minus1", numpy_helper.from_array(np.array([-1.0]), "minus1"))


def _fixed_huge_batch(m, d):
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10**12


def _huge_input(m, d):
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 10**6
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 10**6


def _huge_pads(m, d):
    next(a for a in node(m, "conv1").attribute if a.name == "pads").ints[:] = [10**6] * 4


def _softmax_inside(m, d):
    sm = helper.make_node("Softmax", ["r4"], ["r4s"], name="inner_softmax", axis=0)
    m.graph.node.insert(list(m.graph.node).index(node(m, "relu4")) + 1, sm)
    node(m, "out_matmul").input[0] = "r4s"


def _invalid_utf8(m, d):
    return m.SerializeToString().replace(b"Relu", b"R\xffu\xfe", 1)


def _truncated_file(m, d):
    return m.SerializeToString()[:300]


def _not_onnx(m, d):
    return b"PK\x03\x04 not a protobuf at all" * 10


def _external(location: str) -> Callable:
    def mutate(m, d):
        t = init(m, "c2.w")
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.append(onnx.StringStringEntryProto(key="location", value=location))

    return mutate


def _external_short(m, d):
    _external("w.bin")(m, d)
    (d / "w.bin").write_bytes(b"\0" * 12)


CASES: dict[str, tuple[Callable, type[SnncError], str]] = {
    "initializer_dims_vs_data": (_dims_mismatch, DataError, "initializer 'c1.w' declares dims [5, 1, 3, 3]"),
    "huge_declared_dims": (_huge_dims, DataError, "initializer 'c1.w' would have 1,000,000,000,000 elements"),
    "undefined_data_type": (_undefined_type, DataError, "initializer 'fc.b' has element type UNDEFINED"),
    "string_data_type": (_string_type, DataError, "initializer 'fc.b' has element type STRING"),
    "complex_data_type": (_complex_type, DataError, "initializer 'fc.b' has element type COMPLEX64"),
    "typed_field_too_short": (_typed_field_short, DataError, "'fc.b' declares dims [8] (8 values of FLOAT) but stores 3"),
    "truncated_raw_data": (_truncated_raw, DataError, "'c2.w' declares dims [4, 4, 3, 3] (576 bytes of FLOAT) but stores 572"),
    "node_without_outputs": (_node_without_outputs, DataError, "Relu node 'relu1' has no outputs"),
    "avgpool_without_kernel_shape": (_avgpool_without_kernel, DataError, "AveragePool node 'pool2' is malformed: Required attribute 'kernel_shape'"),
    "add_with_one_input": (_add_one_input, DataError, "Add node 'residual' is malformed"),
    "sub_with_one_input": (_sub_one_input, DataError, "Sub node 'norm_sub' is malformed"),
    "conv_without_weight": (_conv_without_weight, DataError, "Conv node 'conv1' is malformed"),
    "conv_weight_not_constant": (_conv_weight_from_input, UnsupportedOpError, "weight must be a constant"),
    "graph_output_not_produced": (_output_not_produced, DataError, "graph output 'nowhere' is not produced"),
    "constant_of_shape_huge": (_constant_of_shape_huge, DataError, "ConstantOfShape node 'six' (computed while folding constants) would have 1,000,000,000,000 elements"),
    "expand_huge": (_expand_huge, DataError, "Expand node 'six' (computed while folding constants) would have 1,000,000,000,000"),
    "tile_huge": (_tile_huge, DataError, "Tile node 'six' (computed while folding constants) would have 1,000,000,000,000"),
    "constant_huge": (_constant_huge, DataError, "attribute 'value' of Constant node 'six' would have 1,000,000,000,000 elements"),
    "folded_reshape_mismatch": (_fold_reshape_mismatch, DataError, "Reshape node 'six' cannot be evaluated on its constant inputs"),
    "nan_weight": (_nan_weight, DataError, "Conv node 'conv2': initializer 'c2.w' holds 1 NaN/inf value(s) of 144"),
    "inf_bias": (_inf_bias, DataError, "Gemm node 'fc': initializer 'fc.b' holds 1 NaN/inf"),
    "batchnorm_negative_epsilon": (_bn_negative_epsilon, DataError, "BatchNormalization node 'bn1' has epsilon -1.0"),
    "reshape_float_target": (_reshape_float_target, DataError, "its target shape ('target') has element type float64"),
    "fixed_huge_batch": (_fixed_huge_batch, DataError, "fixed batch size of 1,000,000,000,000"),
    "huge_input": (_huge_input, DataError, "per-sample input 'x' would have 1,000,000,000,000 elements"),
    "huge_pads": (_huge_pads, DataError, "Conv at node 'conv1' would produce a per-sample tensor of"),
    "softmax_inside": (_softmax_inside, UnsupportedOpError, "holds the batch axis"),
    "invalid_utf8_name": (_invalid_utf8, DataError, "is not valid UTF-8 text"),
    "truncated_file": (_truncated_file, DataError, "is not a readable ONNX model"),
    "not_onnx": (_not_onnx, DataError, "is not a readable ONNX model"),
    "external_data_traversal": (_external("../w.bin"), DataError, "reads external data only from files in the model's own directory"),
    "external_data_absolute": (_external("/etc/passwd"), DataError, "reads external data only from files in the model's own directory"),
    "external_data_missing": (_external("w.bin"), DataError, "'c2.w' keeps its data in 'w.bin', which is not a file beside the model"),
    "external_data_too_short": (_external_short, DataError, "its external data (offset 0, length 12) lies" if False else "(576 bytes) but its external data holds 12 bytes"),
}


def write_case(name: str, tmp_path: Path) -> Path:
    mutate = CASES[name][0]
    model = base_model()
    d = tmp_path / name
    d.mkdir()
    data = mutate(model, d)
    path = d / "model.onnx"
    path.write_bytes(data if isinstance(data, bytes) else model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32))
    return path


def test_the_base_model_converts(tmp_path):
    path = tmp_path / "base.onnx"
    onnx.save(base_model(), path)
    assert classify(path) == "converted"


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_onnx_is_refused(name, tmp_path):
    _, cls, fragment = CASES[name]
    path = write_case(name, tmp_path)
    with pytest.raises(SnncError) as info:
        import_model(path)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    assert fragment in str(info.value)
    assert "\n" not in str(info.value).strip()


@pytest.mark.parametrize("command", ["convert", "inspect", "check"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_refuses_malformed_onnx_with_exit_2(name, command, tmp_path, calib_file):
    path = write_case(name, tmp_path)
    args = {"convert": ["convert", str(path), "--calib", str(calib_file), "-o", str(tmp_path / "out.snn")], "inspect": ["inspect", str(path)],
            "check": ["check", str(path)]}[command]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert CASES[name][2] in " ".join(result.output.split())
    assert not (tmp_path / "out.snn").exists()


def test_external_data_beside_the_model_is_read(tmp_path):
    model = base_model()
    path = tmp_path / "model.onnx"
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=64)
    onnx.save(model, path)
    assert (tmp_path / "weights.bin").exists()
    ext = import_model(path).graph
    ref = import_model(base_model()).graph
    for a, b in zip(ext.nodes, ref.nodes):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_external_data_in_a_model_proto_is_refused(tmp_path):
    model = base_model()
    _external("w.bin")(model, tmp_path)
    with pytest.raises(DataError, match="give snnc the model's file path"):
        import_model(model)


def test_non_finite_outputs_are_not_called_an_importer_bug():
    # The import check on data that makes the model's outputs NaN names the sample, not a bug.
    imported = import_model(base_model())
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    x[2, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match="not finite .* sample 2 .* input sample 2 itself holds NaN/inf") as info:
        check_import(imported.graph, imported.reference, x, reference_name=imported.reference_name)
    assert "bug" not in str(info.value)


# ======================================================================== fuzz
FUZZ_SEED, FUZZ_N = 15, 300


def test_fuzzed_onnx_mutants_never_crash(tmp_path):
    """Every mutant is converted or refused with an SnncError, each within 5 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend
    try:
        outcomes: collections.Counter[str] = collections.Counter()
        failures, slow = [], []
        start = time.perf_counter()
        path = tmp_path / "mutant.onnx"
        for desc, data in mutants(FUZZ_SEED, FUZZ_N, base_model()):
            path.write_bytes(data)
            t0 = time.perf_counter()
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                outcome = classify(path)
            dt = time.perf_counter() - t0
            outcomes[outcome] += 1
            if outcome.startswith("crash:"):
                failures.append(f"{desc}: {outcome}")
            if dt > 5.0:
                slow.append(f"{desc}: {dt:.1f} s")
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    print(f"\n{FUZZ_N} ONNX mutants in {total:.1f} s: {dict(sorted(outcomes.items()))}")
    assert not failures, "\n".join(failures)
    assert not slow, "\n".join(slow)
    assert outcomes["converted"] > 0 and sum(v for k, v in outcomes.items() if k.startswith("refused:")) > 0


def test_mutants_are_reproducible():
    base = base_model()
    a = list(mutants(3, 40, base))
    b = list(mutants(3, 40, base))
    assert a == b
    assert len({d for d, _ in a}) == 40
    assert list(mutants(3, 41, base))[:40] == a  # mutant i depends on (seed, i) only


# ====================================================== dynamo torch.flatten chain
def _resnet_cl():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return F.relu(self.b(F.relu(self.a(x))) + x)

    class ResNet(nn.Module):
        """stem, two residual blocks, global average pool, torch.flatten(x, 1), fc."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 6, 3, stride=2, padding=1)
            self.blocks = nn.Sequential(Block(6), Block(6))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            x = self.pool(self.blocks(F.relu(self.stem(x))))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    # channels_last: the dynamo exporter writes torch.flatten as an as_strided gather.
    return ResNet().eval().to(memory_format=torch.channels_last)


def test_dynamo_flatten_chain_gives_the_same_snn_as_the_legacy_export(tmp_path):
    pytest.importorskip("onnxscript")
    import torch

    model = _resnet_cl()
    x = torch.randn(2, 1, 12, 12).to(memory_format=torch.channels_last)
    legacy, dynamo = tmp_path / "legacy.onnx", tmp_path / "dynamo.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(legacy), dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], dynamic_shapes=({0: torch.export.Dim("batch")},))
        prog.save(str(dynamo))
    ops = [n.op_type for n in onnx.load(str(dynamo)).graph.node]
    # The chain of issue 15: ReduceMean -> Reshape([-1]) -> Range/Mul/Unsqueeze/Add -> Gather -> Reshape -> Gemm.
    assert {"Range", "Gather", "Reshape"} <= set(ops), ops
    imported = import_model(dynamo)
    assert any("proved per-sample" in n for n in imported.graph.meta["notices"])

    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 1, 12, 12)).astype(np.float32)
    test = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    a = snnc.convert(str(legacy), calib=calib, timesteps=8, calibration="light")
    b = snnc.convert(str(dynamo), calib=calib, timesteps=8, calibration="light")
    assert [n.op for n in a.snn.nodes] == [n.op for n in b.snn.nodes]
    for na, nb in zip(a.snn.nodes, b.snn.nodes):
        assert na.params.keys() == nb.params.keys()
        for k in na.params:
            np.testing.assert_array_equal(na.params[k], nb.params[k], err_msg=f"{na.name}.{k}")
    np.testing.assert_array_equal(a.run(test), b.run(test))
