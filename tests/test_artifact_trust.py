"""The .snn loader treats the file as untrusted (issue 15): a golden test per error class,
through the API and the CLI, and a seeded fuzz of artifact mutants."""

from __future__ import annotations

import json
import time
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fuzzing.artifact_mutants import base_artifact, classify, mutants, patch_zip_headers, rebuild

import snnc
from snnc.cli import main
from snnc.errors import ArtifactError, SnncError
from snnc.ir.serialize import MAX_JSON_DEPTH, MAX_TIMESTEPS, load_artifact

WIDE = {"COLUMNS": "1000"}  # the one-line messages must not wrap


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The fuzz's base: a small converted CNN (see :func:`base_artifact`)."""
    return base_artifact(tmp_path_factory.mktemp("trust") / "tiny.snn")


def _node(doc: dict, graph: str, op: str) -> dict:
    return next(n for n in doc["graphs"][graph]["nodes"] if n["op"] == op)


def _set_attr(graph: str, op: str, key: str, value):
    def edit(doc):
        _node(doc, graph, op)["attrs"][key] = value

    return edit


def _param_ref(doc: dict, graph: str, op: str, key: str) -> str:
    return _node(doc, graph, op)["params"][key]


def _edit_array(graph: str, op: str, key: str, fn):
    """An arrays edit applying ``fn`` to parameter ``key`` of the first ``op`` node of ``graph``."""

    def edit(arrays):
        ref = next(r for r in arrays if r.startswith(f"{graph}/") and r.endswith(f"/{key}") and _OPS[graph].get(r.split("/")[1]) == op)
        arrays[ref] = fn(arrays[ref])

    return edit


_OPS: dict[str, dict[str, str]] = {}


def _bomb(base: bytes) -> bytes:
    """weights.npz deflated from a declared 64 MiB array of zeros (~1000x)."""

    def add(arrays):
        arrays["snn/bomb/weight"] = np.zeros(16 << 20, np.float32)

    return rebuild(base, arrays=add, reseal=True)


def _unused_array(base: bytes) -> bytes:
    """A 4 MiB array of random floats that no node uses (the digest left as saved)."""

    def add(arrays):
        arrays["snn/extra/weight"] = np.random.default_rng(0).normal(size=1 << 20).astype(np.float32)

    return rebuild(base, arrays=add)


def _zip_with(base: bytes, names: list[str]) -> bytes:
    import io

    with zipfile.ZipFile(io.BytesIO(base)) as zf:
        data = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in names:
            zf.writestr(n, data.get(n, b"x"))
    return buf.getvalue()


# (case id, make mutated bytes from the base bytes, message fragment)
GOLDEN = [
    # 4: malformed manifests
    ("manifest-list", lambda b: rebuild(b, manifest=lambda d: [d]), "manifest.json is a list, not an object"),
    ("manifest-string", lambda b: rebuild(b, manifest=lambda d: "snnc-artifact"), "manifest.json is a string, not an object"),
    ("graphs-null", lambda b: rebuild(b, manifest=lambda d: d.update(graphs=None)), "graphs: expected an object, got None"),
    ("nodes-strings", lambda b: rebuild(b, manifest=lambda d: d["graphs"]["snn"].update(nodes=["conv"])), "graphs.snn.nodes[0]: expected an object, got 'conv'"),
    ("params-list", lambda b: rebuild(b, manifest=lambda d: d["graphs"]["snn"]["nodes"][0].update(params=["w", "b"])), "graphs.snn.nodes[0].params: expected an object, got a list"),
    ("deep-nesting", lambda b: rebuild(b, manifest=lambda d: d["provenance"].update(deep=json.loads("[" * 200 + "]" * 200))), f"nests 202 levels deep; the limit is {MAX_JSON_DEPTH}"),
    ("encrypted-member", lambda b: patch_zip_headers(b, flags=0x1), "manifest.json is encrypted; snnc writes plain members"),
    ("encrypted-array", lambda b: patch_zip_headers(b, flags=0x1, which=1), "is encrypted; snnc writes plain members"),
    ("zstd-member", lambda b: patch_zip_headers(b, method=93), "manifest.json uses compression method 93"),
    ("unknown-member", lambda b: _zip_with(b, ["manifest.json", "weights.npz.bak"]), "it must hold exactly manifest.json and weights.npz"),
    ("old-format", lambda b: rebuild(b, manifest=lambda d: d.update(format_version=1)), "uses artifact format version 1; this snnc reads version 2"),
    # 5: consistency with the ops' rules
    ("conv-groups", lambda b: rebuild(b, manifest=_set_attr("snn", "conv", "groups", 3)), "node '0' (conv): attrs.groups: expected a positive integer dividing 1 input"),
    ("conv-strides", lambda b: rebuild(b, manifest=_set_attr("snn", "conv", "strides", [0, 1])), "node '0' (conv): attrs.strides: expected a list of 2 integer(s) >= 1"),
    ("conv-pads", lambda b: rebuild(b, manifest=_set_attr("snn", "conv", "pads", [-1, 1, 1, 1])), "attrs.pads: expected a list of 4 integer(s) >= 0"),
    ("conv-pads-shape", lambda b: rebuild(b, manifest=_set_attr("snn", "conv", "pads", [2, 2, 2, 2])), "node '0' (conv): recorded output shape [4, 8, 8] differs from the [4, 10, 10] its op computes"),
    ("pool-kernel", lambda b: rebuild(b, manifest=_set_attr("snn", "avg_pool", "kernel", [3, 3])), "(avg_pool): recorded output shape"),
    ("reshape-target", lambda b: rebuild(b, manifest=_set_attr("snn", "reshape", "shape", [15])), "(reshape): attrs.shape: [15] holds 15 elements; the input [4, 2, 2] has 16"),
    ("op-name", lambda b: rebuild(b, manifest=lambda d: _node(d, "snn", "linear").update(op="dense")), "unknown op 'dense'"),
    ("op-swapped", lambda b: rebuild(b, manifest=lambda d: _node(d, "snn", "avg_pool").update(op="reshape")), "(reshape): attrs.kernel: op 'reshape' has no such attribute"),
    ("enum-reset", lambda b: rebuild(b, manifest=_set_attr("snn", "if_neuron", "reset", "sometimes")), "attrs.reset: expected one of 'subtract', 'zero'"),
    ("weight-shape", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "weight", lambda a: a[:, :, :2]), reseal=True), "node '0' (conv): recorded output shape [4, 8, 8] differs"),
    ("weight-channels", lambda b: rebuild(b, arrays=_edit_array("snn", "linear", "weight", lambda a: a[:, :15]), reseal=True), "(linear): params.weight: expected [F_out, 16]"),
    ("bias-length", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "bias", lambda a: a[:3]), reseal=True), "(conv): params.bias: shape [3] does not match the weight's output channels (expected [4])"),
    ("threshold-shape", lambda b: rebuild(b, arrays=_edit_array("snn", "if_neuron", "threshold", lambda a: np.ones((5, 1, 1), np.float32)), reseal=True), "params.threshold: shape [5, 1, 1] does not broadcast"),
    ("table-vs-npz", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "bias", lambda a: a[:3])), "is float32 [3] in weights.npz; the manifest declares float32 [4]"),
    ("dtype", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "bias", lambda a: a.astype(np.float64))), "is float64 [4] in weights.npz"),
    ("object-dtype", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "bias", lambda a: np.array([{"x": 1}] * 4, dtype=object))), "holds Python objects (dtype object)"),
    ("stored-T-zero", lambda b: rebuild(b, manifest=lambda d: d["provenance"].update(timesteps=0)), f"provenance.timesteps: expected an integer from 1 to {MAX_TIMESTEPS:,}, got 0"),
    ("stored-T-string", lambda b: rebuild(b, manifest=lambda d: d["provenance"].update(timesteps="8")), "provenance.timesteps: expected an integer"),
    ("stored-T-huge", lambda b: rebuild(b, manifest=lambda d: d["provenance"].update(timesteps=10**9)), "provenance.timesteps: expected an integer"),
    ("snn-stage", lambda b: rebuild(b, manifest=lambda d: d["graphs"].update(snn=d["graphs"]["ann_reference"], ann_reference=d["graphs"]["snn"])), "graph 'snn' is at the ANN stage"),
    # 6: zip bombs and data no node uses
    ("zip-bomb", _bomb, "weights.npz would decompress"),
    ("unused-array", _unused_array, "(data no node uses?)"),
    ("bomb-manifest", lambda b: rebuild(b, manifest=lambda d: d["provenance"].update(pad=" " * (17 << 20))), "manifest.json is 17,"),
    # digest and non-finite weights
    ("digest", lambda b: rebuild(b, arrays=_edit_array("snn", "linear", "weight", lambda a: a * np.float32(1.01))), "weights digest mismatch"),
    ("nan-weight", lambda b: rebuild(b, arrays=_edit_array("snn", "conv", "weight", lambda a: np.where(a > 0, np.nan, a).astype(np.float32)), reseal=True), "node '0': parameter 'weight' has non-finite values"),
    ("inf-threshold", lambda b: rebuild(b, arrays=_edit_array("snn", "if_neuron", "threshold", lambda a: np.full_like(a, np.inf)), reseal=True), "has non-finite values"),
    # the container
    ("truncated", lambda b: b[: len(b) // 2], "is not a snnc artifact"),
    ("bit-flip", lambda b: b[:200] + bytes([b[200] ^ 0x10]) + b[201:], "snnc"),
]  # fmt: skip


@pytest.fixture(scope="module")
def golden(tiny, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    base = tiny.read_bytes()
    doc = json.loads(zipfile.ZipFile(tiny).read("manifest.json"))
    for g, gdoc in doc["graphs"].items():
        _OPS[g] = {n["name"]: n["op"] for n in gdoc["nodes"]}
    out = tmp_path_factory.mktemp("golden")
    files = {}
    for case, make, fragment in GOLDEN:
        path = out / f"{case}.snn"
        path.write_bytes(make(base))
        files[case] = (path, fragment)
    return files


def test_base_artifact_loads_and_runs(tiny):
    model = snnc.load(tiny)
    assert model.timesteps == 4 and model.run(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 3)
    assert classify(tiny) == "loaded"
    manifest = json.loads(zipfile.ZipFile(tiny).read("manifest.json"))
    assert manifest["format_version"] == 2 and manifest["weights"]["digest"].startswith("sha256:")


@pytest.mark.parametrize("case", [c for c, _, _ in GOLDEN])
def test_golden_error_api(case, golden):
    path, fragment = golden[case]
    with pytest.raises(ArtifactError) as info:
        snnc.load(path)
    msg = str(info.value)
    assert type(info.value) is ArtifactError
    assert fragment in msg, msg
    assert "\n" not in msg and len(msg) < 600, msg


@pytest.mark.parametrize("command", ["inspect", "run", "check", "export"])
def test_golden_errors_cli_exit_2(command, golden, tmp_path):
    x = tmp_path / "x.npz"
    np.savez(x, x=np.zeros((2, 1, 8, 8), np.float32))
    for case, (path, fragment) in golden.items():
        args = {
            "inspect": ["inspect", str(path)],
            "run": ["run", str(path), "--input", str(x), "-o", str(tmp_path / "y.npz"), "--no-progress"],
            "check": ["check", str(path), "--backend", "reference"],
            "export": ["export", str(path), "-o", str(tmp_path / "m.nir")],
        }[command]
        res = CliRunner(env=WIDE).invoke(main, args)
        assert res.exit_code == 2, (case, res.output)
        assert "Traceback" not in res.output, (case, res.output)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, res.stderr)
        assert fragment in lines[0], (case, lines[0])
        assert not (tmp_path / "y.npz").exists() and not (tmp_path / "m.nir").exists()


def test_legitimate_variants_load(tiny, tmp_path):
    """What a zip tool may do to a valid artifact (store instead of deflate, reorder
    members, Fortran-order arrays) does not make it invalid."""
    base = tiny.read_bytes()
    for name, data in {
        "stored": rebuild(base, method=zipfile.ZIP_STORED),
        "reordered": _zip_with(base, ["weights.npz", "manifest.json"]),
        "fortran": rebuild(base, arrays=lambda a: {k: np.asfortranarray(v) for k, v in a.items()}),
    }.items():
        path = tmp_path / f"{name}.snn"
        path.write_bytes(data)
        assert classify(path) == "loaded", name


def test_loading_memory_is_bounded(tiny, tmp_path):
    """Peak Python/numpy memory (tracemalloc) while loading: a real artifact stays within
    a small multiple of its parameter bytes; a zip bomb and an unused array are refused
    before they are decompressed."""
    from snnc.ir import Graph, infer_shapes
    from snnc.ir.serialize import save_artifact

    r = np.random.default_rng(0)
    g = Graph("big", "ann")
    x = g.add_input("x", (256,))
    h = g.add_node("linear", [x], {}, {"weight": r.normal(size=(2048, 256)), "bias": np.zeros(2048)}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(size=(1024, 2048)), "bias": np.zeros(1024)}).output
    g.set_outputs([h])
    infer_shapes(g)
    real = tmp_path / "real.snn"
    save_artifact(real, {"ann": g}, {})
    param_bytes = 4 * g.num_params()  # 10.5 MiB
    load_artifact(real)  # warm up imports and caches

    def peak(path) -> int:
        tracemalloc.start()
        try:
            try:
                load_artifact(path)
            except ArtifactError:
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(real) < 1.5 * param_bytes + (2 << 20)
    base = tiny.read_bytes()
    for name, data in {"bomb": _bomb(base), "unused": _unused_array(base)}.items():
        path = tmp_path / f"{name}.snn"
        path.write_bytes(data)
        assert peak(path) < 2 << 20, name


FUZZ_MUTANTS = 240


def test_fuzz_artifact_mutants(tiny, tmp_path):
    """Seeded mutants of a real artifact: each ends in 'loaded' (and ran) or an SnncError,
    within 5 s; none crashes."""
    base = tiny.read_bytes()
    path = tmp_path / "mutant.snn"
    outcomes: Counter[str] = Counter()
    failures = []
    t0 = time.perf_counter()
    for desc, data in mutants(seed=15, n=FUZZ_MUTANTS, base=base):
        path.write_bytes(data)
        t = time.perf_counter()
        outcome = classify(path)
        took = time.perf_counter() - t
        outcomes[outcome.split(":")[0]] += 1
        if outcome.startswith("crash") or took > 5:
            failures.append(f"{desc}: {outcome} in {took:.1f} s")
    assert not failures, "\n".join(failures)
    assert outcomes["refused"] > FUZZ_MUTANTS // 2 and outcomes["loaded"] > 0, outcomes
    assert time.perf_counter() - t0 < 60


def test_mutants_are_reproducible(tiny):
    base = tiny.read_bytes()
    a = list(mutants(seed=3, n=20, base=base))
    time.sleep(2.1)  # zip timestamps have a 2 s resolution: a clock-dependent byte would show
    b = list(mutants(seed=3, n=20, base=base))
    assert a == b and len({d for d, _ in a}) > 10


def test_save_refuses_non_finite(tmp_path):
    from snnc.ir import Graph, infer_shapes
    from snnc.ir.serialize import save_artifact

    g = Graph("g", "ann")
    x = g.add_input("x", (2,))
    g.set_outputs([g.add_node("linear", [x], {}, {"weight": np.full((1, 2), np.nan), "bias": np.zeros(1)}).output])
    infer_shapes(g)
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        save_artifact(tmp_path / "nan.snn", {"ann": g}, {})
    assert not list(tmp_path.iterdir())


def test_errors_are_snnc_errors():
    assert issubclass(ArtifactError, SnncError)


def test_an_artifact_with_many_arrays_round_trips(tmp_path):
    """weights.npz's zip directory grows with the number of arrays: RegNetX-400MF's 633 arrays
    (66,961 bytes of directory) used to exceed the fixed 64 KiB limit, so snnc saved an
    artifact it refused to load."""
    from snnc.ir import Graph, infer_shapes
    from snnc.model import SpikingModel
    from snnc.passes import PassContext, parse_pipeline, run_passes

    rng = np.random.default_rng(0)
    g = Graph("many")
    v = g.add_input("x", (4,))
    for i in range(300):  # 600 arrays with exporter-length names: > 64 KiB of directory
        name = f"trunk_output.block{i}.a_rather_long_module_path_like_an_exporter_writes.Gemm"
        v = g.add_node("linear", [v], {}, {"weight": np.eye(4) + rng.normal(0, 0.01, (4, 4)), "bias": np.zeros(4)}, name).output
        v = g.add_node("relu", [v], name=f"{name}.Relu").output
    g.set_outputs([v])
    infer_shapes(g)
    ctx = PassContext(calib=rng.uniform(0, 1, (8, 4)).astype(np.float32), timesteps=4)
    snn = g.clone()
    run_passes(snn, parse_pipeline("canonicalize,balance-thresholds,insert-if"), ctx)
    path = tmp_path / "many.snn"
    SpikingModel(snn, g, {"timesteps": 4}, ctx.ann_reference).save(path)
    with zipfile.ZipFile(path) as zf, zf.open("weights.npz") as w, zipfile.ZipFile(w) as inner:
        assert len(inner.infolist()) >= 600
    back = snnc.load(path)
    assert len(back.snn.nodes) == len(snn.nodes)
