"""Chip targets as data (snnc/targets/*.toml, snnc.mapping.targets): the shipped targets load with
their sourced figures, a user's copy of the template loads, and every kind of bad file is a
DataError naming what is wrong (never a KeyError or TypeError)."""

from __future__ import annotations

import importlib.resources
import random
import re
import tomllib
from pathlib import Path

import pytest

from snnc.errors import DataError
from snnc.mapping.targets import (
    BITS_KEYS,
    ENERGY_KEYS,
    MAX_FILE_BYTES,
    TIMING_KEYS,
    CoreBudget,
    Target,
    available_targets,
    load_target,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("generic", "loihi2", "speck", "spinnaker2")
KI = 1024


def _generic_text() -> str:
    return importlib.resources.files("snnc.targets").joinpath("generic.toml").read_text()


def _leaves(doc: dict) -> list[str]:
    """Dotted keys of every value in a parsed target file (override tables by core index)."""
    out = []
    for k, v in doc.items():
        if isinstance(v, dict):
            out += [f"{k}.{kk}" for kk in v]
        elif k == "core_overrides":
            out += [f"core_overrides[{o['index']}].{kk}" for o in v for kk in o]
        else:
            out.append(k)
    return out


def test_available_targets_are_the_shipped_files():
    assert available_targets() == sorted(SHIPPED)
    names = {p.name for p in importlib.resources.files("snnc.targets").iterdir()}
    assert {f"{n}.toml" for n in SHIPPED} <= names


def test_pyproject_ships_the_toml_files_as_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.toml" in cfg["tool"]["setuptools"]["package-data"]["snnc.targets"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_loads_with_sane_numbers_and_a_source_for_every_number(name):
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name and Path(t.path).name == f"{name}.toml" and Path(t.path).is_file()
    assert t.description and 1 <= t.cores_per_chip <= 1024 and 1 <= t.max_chips <= 100_000
    assert t.topology in ("mesh", "chain", "full")
    assert set(t.bits) == set(BITS_KEYS) and all(1 <= b <= 64 for b in t.bits.values())
    assert set(t.energy) == set(ENERGY_KEYS) and set(t.timing) == set(TIMING_KEYS)
    assert t.energy["synop_pj"] > 0 and t.timing["synop_ns"] > 0  # every target charges its synaptic ops
    for i in range(t.cores_per_chip):
        b = t.budget(i)
        assert 64 <= b.neurons <= 1 << 20 and 1024 <= b.synapses <= 1 << 24
        assert all(getattr(b, k) is None or getattr(b, k) >= 1 for k in ("fan_in", "fan_out", "destinations", "layers"))
    if t.chip_neurons is not None:  # a chip's neuron cap never exceeds what its cores hold together
        assert t.chip_neurons <= sum(t.budget(i).neurons for i in range(t.cores_per_chip))
    # (a synapse cap may: Loihi 2's 120 M counts 1-bit synapses, its cores' budgets 8-bit ones)
    # every number in a shipped file comes with its source (a comment on its line or the line above)
    doc = tomllib.loads(Path(t.path).read_text())
    numbers = [k for k in _leaves(doc) if k not in ("name", "description")]
    assert [k for k in numbers if k not in t.sources] == []
    assert all(len(t.sources[k]) >= 10 for k in numbers)
    assert t.as_dict()["core"]["neurons"] == t.core.neurons


def test_loihi2_matches_the_brief_and_the_lava_backend():
    t = load_target("loihi2")
    assert t.cores_per_chip == 128 and t.overrides == {}
    assert (t.chip_neurons, t.chip_synapses) == (1_000_000, 120_000_000)
    assert t.core == CoreBudget(neurons=8192, synapses=128 * KI, fan_in=32768, fan_out=32768)  # 128 KiB at 1 byte per weight
    assert t.weight_sharing is False and t.topology == "mesh" and t.max_chips == 1152
    assert t.bits == {"weight": 8, "state": 24, "bias": 13, "spike_payload": 24}
    assert t.energy["synop_pj"] == 23.6 and t.timing["step_barrier_ns"] == 465
    assert "assumption" in t.sources["core.fan_in"] and "assumption" in t.sources["energy.chip_hop_pj"]


def test_loihi2_agrees_with_the_lava_backend_constants():
    pytest.importorskip("lava")
    from snnc_lava import backend, lower

    t = load_target("loihi2")
    lim = backend.LOIHI2
    assert (t.cores_per_chip, t.chip_neurons, t.chip_synapses) == (lim["cores_per_chip"], lim["neurons_per_chip"], lim["synapses_per_chip"])
    assert (t.core.neurons, t.core.synapses) == (lim["neurons_per_core"], lim["synapse_bytes_per_core"] // (t.bits["weight"] // 8))
    assert 2 ** (t.bits["weight"] - 1) - 1 == lower.M_MAX
    assert 2 ** (t.bits["state"] - 1) - 1 == lower.V_LIMIT
    assert 2 ** (t.bits["bias"] - 1) - 1 == lower.BIAS_MAX >> 7
    assert t.bits["spike_payload"] == lower.GRADED_PAYLOAD_BITS


def test_speck_per_core_memories_match_the_sinabs_table():
    t = load_target("speck")
    # sinabs/backend/dynapcnn/chips/dynapcnn.py get_constraints(): neuron and kernel memory per core
    neurons = [64, 64, 64, 32, 32, 16, 16, 16, 16]
    kernels = [16, 16, 16, 32, 32, 64, 64, 16, 16]
    assert t.cores_per_chip == 9
    assert [t.budget(i).neurons // KI for i in range(9)] == neurons
    assert [t.budget(i).synapses // KI for i in range(9)] == kernels
    assert all(t.budget(i).destinations == 2 and t.budget(i).layers == 1 for i in range(9))  # inherited from [core]
    assert all(t.budget(i).fan_in is None and t.budget(i).fan_out is None for i in range(9))
    assert t.chip_neurons == sum(neurons) * KI == 327_680 and t.chip_synapses == sum(kernels) * KI == 278_528
    assert t.weight_sharing is True and t.max_chips == 1
    assert t.bits == {"weight": 8, "state": 16, "bias": 8, "spike_payload": 1}
    assert t.timing["step_barrier_ns"] == 0 and t.energy["chip_hop_pj"] == 0  # asynchronous, one chip


def test_budget_inheritance_and_default_core():
    t = load_target("speck")
    assert set(t.overrides) == set(range(7))
    assert t.budget(7) is t.core and t.budget(8) is t.core
    # an override keeps what it does not set: core 3 sets neurons and synapses, inherits the rest
    assert t.budget(3) == CoreBudget(neurons=32 * KI, synapses=32 * KI, destinations=2, layers=1)
    assert t.budget(5).neurons == t.core.neurons and t.budget(5).synapses == 64 * KI
    assert t.sources["core_overrides[5].synapses"].startswith("[sinabs]")


def test_spinnaker2_is_budgets_without_routing_tables():
    t = load_target("spinnaker2")
    assert t.cores_per_chip == 152 and t.core.neurons == 1024 and t.core.synapses == 64 * KI
    assert t.core.fan_in is None and t.core.fan_out is None and t.core.destinations is None
    assert t.chip_neurons is None and t.max_chips == 48 * 1440
    assert t.energy["synop_pj"] == 10


def test_a_user_copy_of_the_generic_template_loads(tmp_path):
    text = _generic_text().replace('name = "generic"', 'name = "mychip"')
    text = text.replace("cores = 64", "cores = 16")
    text += "\n[[core_overrides]]\nindex = 15  # the big core\nneurons = 16384\n"
    p = tmp_path / "mychip.toml"
    p.write_text(text)
    for arg in (str(p), p):
        t = load_target(arg)
        assert t.name == "mychip" and t.path == str(p) and t.cores_per_chip == 16
        assert t.budget(15) == CoreBudget(neurons=16384, synapses=262144, fan_in=4096, fan_out=16384)
        assert t.budget(0) == load_target("generic").core
        assert t.sources["core_overrides[15].index"] == "the big core"


def test_a_path_without_separator_or_suffix_is_read_when_no_shipped_target_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine").write_text(_generic_text())
    assert load_target("mine").name == "generic"
    Path("loihi2").write_text(_generic_text())
    assert load_target("loihi2").cores_per_chip == 128  # the shipped name wins ...
    assert load_target("./loihi2").cores_per_chip == 64  # ... a path reads the file


# ----------------------------------------------------------------------------- bad files
def _sub(old: str, new: str):
    def f(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return f


def _add(extra: str):
    return lambda text: text + "\n" + extra + "\n"


def _drop_table(name: str):
    return lambda text: re.sub(rf"\n\[{name}\]\n(?:[^\[]*)", "\n", text, count=1)


BAD = {
    "invalid toml": (_sub("cores = 64", "cores = "), r"not valid TOML.*line \d+"),
    "invalid toml value": (_sub("cores = 64", "cores = 6 4"), r"not valid TOML.*line \d+"),
    "duplicate key": (_sub("cores = 64", "cores = 64\ncores = 32"), r"not valid TOML"),
    "typo in a key": (_sub("neurons = 4096", "nuerons = 4096"), r"\[core\]: unknown key 'nuerons' \(did you mean 'neurons'\?\)"),
    "unknown top-level key": (lambda t: "extra = 1\n" + t, r"unknown key 'extra'"),
    "unknown table": (_add("[extras]\nx = 1"), r"unknown key 'extras'"),
    "missing required key": (_sub("cores = 64\n", ""), r"\[chip\]: missing required key cores"),
    "missing name": (_sub('name = "generic"\n', ""), r"missing required key name"),
    "missing table": (_drop_table("energy"), r"missing table \[energy\]"),
    "table is a value": (_sub("[storage]\n", "storage = 1\n[storage2]\n"), r"unknown key 'storage2'|storage.*not a table"),
    "string count": (_sub("cores = 64", 'cores = "64"'), r"\[chip\] cores: must be an integer, got a string '64'"),
    "boolean count": (_sub("cores = 64", "cores = true"), r"\[chip\] cores: must be an integer, got a boolean"),
    "float count": (_sub("neurons = 4096", "neurons = 4096.5"), r"\[core\] neurons: must be an integer, got a number 4096.5"),
    "array count": (_sub("neurons = 4096", "neurons = [4096]"), r"\[core\] neurons: must be an integer, got an array"),
    "zero count": (_sub("neurons = 4096", "neurons = 0"), r"\[core\] neurons: must be positive, got 0"),
    "negative count": (_sub("synapses = 262144", "synapses = -5"), r"\[core\] synapses: must be positive, got -5"),
    "negative optional count": (_sub("fan_in = 4096", "fan_in = -1"), r"\[core\] fan_in: must be positive"),
    "absurd count": (_sub("neurons = 4096", "neurons = 10_000_000_000_000"), r"\[core\] neurons: is 10,000,000,000,000: at most 1,000,000,000,000"),
    "absurd chips": (_sub("max_chips = 16", "max_chips = 9223372036854775807"), r"\[board\] max_chips: is .*at most"),
    "zero bits": (_sub("weight = 8", "weight = 0"), r"\[bits\] weight: must be positive"),
    "too many bits": (_sub("weight = 8", "weight = 65"), r"\[bits\] weight: is 65: at most 64 bits"),
    "negative energy": (_sub("synop_pj = 23.6", "synop_pj = -1.0"), r"\[energy\] synop_pj: must be >= 0"),
    "nan energy": (_sub("synop_pj = 23.6", "synop_pj = nan"), r"\[energy\] synop_pj: must be a finite number"),
    "infinite time": (_sub("synop_ns = 3.5", "synop_ns = inf"), r"\[timing\] synop_ns: must be a finite number"),
    "absurd time": (_sub("synop_ns = 3.5", "synop_ns = 1e300"), r"\[timing\] synop_ns: is 1e\+300: at most"),
    "string energy": (_sub("synop_pj = 23.6", 'synop_pj = "23.6 pJ"'), r"\[energy\] synop_pj: must be a number, got a string"),
    "unknown energy key": (_sub("synop_pj = 23.6", "synop_pj = 23.6\nspike_pj = 1.7"), r"\[energy\]: unknown key 'spike_pj'"),
    "weight_sharing not a bool": (_sub("weight_sharing = false", "weight_sharing = 0"), r"weight_sharing: must be true or false, got an integer"),
    "bad topology": (_sub('topology = "mesh"', 'topology = "ring"'), r"\[board\] topology: is 'ring'; one of 'mesh', 'chain', 'full'"),
    "bad name": (_sub('name = "generic"', 'name = "my chip!"'), r"name: is 'my chip!'; a name is"),
    "empty name": (_sub('name = "generic"', 'name = ""'), r"name: is ''"),
    "multi-line description": (_sub('description = "Generic', 'description = "two\\nlines, Generic'), r"description: must be one printable line"),
    "override index out of range": (_add("[[core_overrides]]\nindex = 64\nneurons = 8"), r"\[\[core_overrides\]\] #1 index: 64 is out of range: the chip has 64 cores, indices 0 to 63"),
    "override negative index": (_add("[[core_overrides]]\nindex = -1"), r"\[\[core_overrides\]\] #1 index: must be >= 0"),
    "override without index": (_add("[[core_overrides]]\nneurons = 8"), r"\[\[core_overrides\]\] #1: missing required key index"),
    "override twice": (_add("[[core_overrides]]\nindex = 3\n[[core_overrides]]\nindex = 3"), r"#2 index: core 3 is overridden twice"),
    "override unknown key": (_add("[[core_overrides]]\nindex = 3\nneuron = 8"), r"#1: unknown key 'neuron' \(did you mean 'neurons'\?\)"),
    "override bad value": (_add("[[core_overrides]]\nindex = 3\nneurons = 0"), r"#1 \(core 3\) neurons: must be positive"),
    "overrides as one table": (_add("[core_overrides]\nindex = 3"), r"\[core_overrides\]: must be an array of tables: write \[\[core_overrides\]\]"),
    "overrides as an array of numbers": (lambda t: "core_overrides = [1, 2]\n" + t, r"core_overrides: must be an array of tables"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_target_file_is_a_clear_data_error(case, tmp_path):
    mutate, message = BAD[case]
    p = tmp_path / "bad.toml"
    p.write_text(mutate(_generic_text()))
    with pytest.raises(DataError, match=message) as e:
        load_target(p)
    assert repr(str(p)) in str(e.value) and "docs/targets.md" in str(e.value)


def test_unknown_target_name_lists_the_shipped_ones():
    with pytest.raises(DataError, match=r"unknown target 'loihi3': snnc ships generic, loihi2, speck, spinnaker2"):
        load_target("loihi3")
    with pytest.raises(DataError, match=r"unknown target ''"):
        load_target("")


def _write(path: Path, data: str | bytes) -> Path:
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.toml", r"does not exist; give a shipped target name"),
        (lambda d: (d / "dir.toml").mkdir() or d / "dir.toml", r"is a directory"),
        (lambda d: _write(d / "big.toml", "#" * MAX_FILE_BYTES + "\n"), r"is 1,048,577 bytes, more than the 1,048,576 bytes it may have"),
        (lambda d: _write(d / "latin1.toml", _generic_text().encode() + b"# caf\xe9\n"), r"is not UTF-8 text"),
        (lambda d: _write(d / "empty.toml", ""), r"missing tables \[chip\], \[core\]"),
    ],
    ids=["missing", "directory", "too big", "not utf-8", "empty"],
)
def test_unreadable_target_files(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_target(make(tmp_path))


def test_no_mangled_file_escapes_as_anything_but_a_data_error(tmp_path):
    """Every line dropped, and 200 random single-byte edits, of the template: it loads or raises
    DataError, never KeyError / TypeError / ValueError / UnicodeError."""
    text = _generic_text()
    lines = text.splitlines(keepends=True)
    variants = ["".join(lines[:i] + lines[i + 1 :]) for i in range(len(lines))]
    rng = random.Random(0)
    raw = text.encode()
    for _ in range(200):
        i = rng.randrange(len(raw))
        variants.append((raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]).decode("utf-8", "surrogateescape"))
    p = tmp_path / "mangled.toml"
    for v in variants:
        p.write_bytes(v.encode("utf-8", "surrogateescape"))
        try:
            load_target(p)
        except DataError:
            pass
