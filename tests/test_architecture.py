"""The shape of the code: no import cycles, the layering the README promises, one graph walk,
op categories derived from the op set, and a new op running on every backend with no
backend edits."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

import snnc
from snnc.backend import get_backend
from snnc.ir import Graph, get_op, infer_shapes, ops_with, verify
from snnc.ir.ops import ANN, SNN, TRAITS, op, unregister_op
from snnc.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"snnc": ROOT / "snnc", "snnc_spikingjelly": ROOT / "backends/spikingjelly/snnc_spikingjelly", "snnc_lava": ROOT / "backends/lava/snnc_lava"}


def _module_name(path: Path, pkg: str, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [pkg, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> nx.DiGraph:
    """Every import between modules of snnc and its backend packages, function-level
    imports included (a cycle through a lazy import is still a cycle)."""
    modules: dict[str, Path] = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            modules[_module_name(path, pkg, root)] = path
    g = nx.DiGraph()
    g.add_nodes_from(modules)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    b = base
                    for _ in range(node.level - 1):
                        b = b.rpartition(".")[0]
                    target = f"{b}.{target}" if target else b
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            for n in names:
                t = resolve(n)
                if t and t != mod and t not in PACKAGES:  # importing a package's root (its version) is not a dependency edge
                    g.add_edge(mod, t)
    return g


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_import_graph()) if len(c) > 1]
    assert cycles == []


def test_layering():
    g = _import_graph()

    def deps(prefix: str) -> set[str]:
        return {t for m, t in g.edges if m == prefix or m.startswith(prefix + ".")}

    # the IR depends on nothing above it (utils.memory: the executor's batch loop bounds the
    # heap; like utils.io a leaf that imports nothing of snnc)
    assert {t for t in deps("snnc.ir") if not t.startswith("snnc.ir")} <= {"snnc.errors", "snnc.utils.io", "snnc.utils.memory"}
    assert not {t for t in deps("snnc.utils.memory") if t.startswith("snnc")}
    # the core (frontends, ir, passes, simulator, analysis, export, the model) never imports the API or the CLI
    for layer in ("snnc.frontends", "snnc.ir", "snnc.passes", "snnc.simulator", "snnc.analysis", "snnc.export", "snnc.model", "snnc.metrics", "snnc.backend"):
        assert not deps(layer) & {"snnc.api", "snnc.cli"}, layer
    # passes never import a frontend, an analysis or an exporter
    assert not {t for t in deps("snnc.passes") if t.startswith(("snnc.frontends", "snnc.analysis", "snnc.export"))}
    # backends depend on the IR and the backend interface only (the core never imports them)
    for pkg in ("snnc_spikingjelly", "snnc_lava"):
        core = {t for t in deps(pkg) if t.startswith("snnc.")}
        assert core <= {"snnc.backend", "snnc.errors"} | {t for t in core if t.startswith("snnc.ir")}, (pkg, core)
    assert not {t for m, t in g.edges if m.startswith("snnc.") and t.startswith(("snnc_spikingjelly", "snnc_lava"))}


# ------------------------------------------------------------------ one graph walk
# The modules allowed to call an op's executable forms (compute / sequence / constant):
# the op set itself, the executor, and the few places that evaluate one op outside a graph
# walk, each for its own reason.
EXECUTES_OPS = {
    "snnc/ir/executor.py",  # the walk
    "snnc/analysis/energy.py",  # moving a layer's per-neuron message rates through data movement (reshape, pad, pooling)
    "snnc/ir/indicator.py",  # the indicator map: an op's compute with every weight set to 1 (path counting: energy, mapping)
    "snnc/passes/fuse_synapses.py",  # the constant part of a chain of synapses: its ops at a zero input, in float64
    "backends/lava/snnc_lava/kernels.py",  # a Lava process steps one op
    "backends/lava/snnc_lava/lower.py",  # static parts (an executor) and spike scales through data movement
}


def _calls_op_forms(path: Path) -> bool:
    """Does the module call ``<spec>.compute / .sequence / .constant(...)`` on an op spec
    (an expression ending in ``spec`` or ``op``)?"""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("compute", "sequence", "constant"):
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("spec", "op"):
                return True
    return False


def test_only_the_executor_and_listed_modules_execute_ops():
    found = {str(p.relative_to(ROOT)) for root in (ROOT / "snnc", ROOT / "backends") for p in root.rglob("*.py") if _calls_op_forms(p)}
    assert "snnc/ir/executor.py" in found  # the check sees calls
    assert found <= EXECUTES_OPS, found - EXECUTES_OPS


def test_op_categories_come_from_the_declarations():
    assert ops_with("synaptic") == {"conv", "conv_transpose", "linear"}
    temporal = {f"temporal_{n}" for n in ops_with("nonlinear")}
    assert ops_with("temporal") == temporal == {"temporal_layer_norm", "temporal_softmax", "temporal_gelu", "temporal_silu", "temporal_matmul"}
    assert {n for n, s in snnc.ir.all_ops().items() if s.stateful} == {"if_neuron", "spiking_max_pool", "readout"} | temporal
    assert ops_with("spiking") == {"if_neuron", "spiking_max_pool"}
    for spec in snnc.ir.all_ops().values():
        assert spec.traits <= set(TRAITS)
        assert spec.doc, spec.name
        assert (spec.compute is None) != (spec.sequence is None)
    # the ANN-only stateless ops are not linear; every stateless SNN-stage op is (it runs on [T*B, ...])
    for name, spec in snnc.ir.all_ops().items():
        if SNN in spec.stages and not spec.stateful:
            assert spec.has("linear"), name
    with pytest.raises(KeyError, match="unknown op trait"):
        ops_with("synaptik")


# ---------------------------------------------------------- adding an op, end to end
@pytest.fixture
def flip_op():
    """A test-only op, added as docs/architecture.md ("Adding an op") says: one declaration."""

    @op("flip_test", ("linear", "preserves_amplitude"), (ANN, SNN), attrs={"axis": -1})
    def _flip(xs, attrs, p):
        """Reverse the order along ``axis`` (a permutation: linear, acts on every step alone)."""
        return torch.flip(xs[0], dims=[attrs["axis"]])

    yield "flip_test"
    unregister_op("flip_test")


def _graph_with(op_name: str) -> Graph:
    r = np.random.default_rng(0)
    g = Graph("flip", "snn")
    x = g.add_input("x", (2, 6, 6))
    c = g.add_node("conv", [x], {"pads": [1, 1, 1, 1]}, {"weight": r.normal(0, 0.5, (4, 2, 3, 3)), "bias": r.normal(0, 0.1, 4)}).output
    s = g.add_node("if_neuron", [c], {}, {"threshold": np.full((4, 1, 1), 0.5), "v_init": np.full((4, 1, 1), 0.25)}).output
    f = g.add_node(op_name, [s], {"axis": 3}).output
    h = g.add_node("reshape", [f], {"shape": [144]}).output
    y = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.2, (3, 144)), "bias": np.zeros(3)}).output
    g.set_outputs([g.add_node("readout", [y]).output])
    infer_shapes(g)
    verify(g)
    return g


def test_a_new_stateless_op_runs_on_every_backend_without_backend_edits(flip_op):
    g = _graph_with(flip_op)
    assert get_op(flip_op).infer_shape([(4, 6, 6)], {"axis": 3}, {}) == (4, 6, 6)
    x = np.random.default_rng(1).uniform(0, 1, (5, 2, 6, 6)).astype(np.float32)
    ref = simulate(g, x, 8).output(8)
    # the flip matters: flipping along the other spatial axis computes something else
    g2 = _graph_with(flip_op)
    g2.node(flip_op).attrs["axis"] = 2
    assert not np.allclose(simulate(g2, x, 8).output(8), ref)
    for name, exact in (("spikingjelly", True), ("lava", False)):
        try:
            be = get_backend(name, device="cpu")
        except snnc.SnncError as e:  # pragma: no cover - both are installed by make setup
            pytest.skip(f"{name}: {e}")
        assert be.unsupported(g) == [], name
        out = be.run(g, x, [8]).output(8)
        if exact:
            np.testing.assert_array_equal(out, ref)
        else:
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_backends_say_why_from_their_tables(flip_op):
    """An op a backend's table has no rule for is reported by unsupported(), not at run time."""
    g = _graph_with(flip_op)
    ref = get_backend("reference")
    assert ref.unsupported(g) == []
    problems = ref.table.unsupported(g)
    assert problems == []
    g.node("if_neuron").attrs["reset"] = "sideways"
    sj = get_backend("spikingjelly", device="cpu")
    (p,) = sj.unsupported(g)
    assert p.node == "if_neuron" and "reset" in p.reason
