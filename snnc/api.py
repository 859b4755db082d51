"""The Python API: ``convert``, ``calibrate``, ``load``, ``evaluate`` and :class:`SpikingModel`.

>>> model = snnc.convert("model.onnx", calib=x_calib, timesteps=32)
>>> y = model.run(x_test)                      # time-averaged outputs, reference simulator
>>> model.save("model.snn")
>>> snnc.evaluate("model.snn", x_test, y_test, timesteps=[8, 16, 32])
>>> m16 = snnc.calibrate("model.snn", x_calib, timesteps=16)   # re-calibrate a saved model for another T

The model object lives in :mod:`snnc.model`, the scores in :mod:`snnc.metrics`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from snnc import parallel
from snnc.backend import resolve_device
from snnc.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_CALIBRATION,
    DEFAULT_EVAL_TIMESTEPS,
    DEFAULT_GRANULARITY,
    DEFAULT_MESSAGE_BITS,
    DEFAULT_NEURON,
    DEFAULT_MAXPOOL,
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    DEFAULT_TIMESTEPS,
    STORE_CHOICES,
)
from snnc.errors import CalibrationError, DataError, PassError
from snnc.frontends import import_model
from snnc.frontends.check import check_import
from snnc.ir.executor import check_input
from snnc.metrics import accuracy, agreement, check_labels, predictions
from snnc.model import SpikingModel, as_batch, load
from snnc.passes import CALIBRATION_PIPELINES, PassContext, default_pipeline, format_pipeline, parse_pipeline, run_passes
from snnc.simulator.budget import check_run_budget
from snnc.simulator.reference import SimResult, check_timesteps
from snnc.utils.io import load_npz
from snnc.utils.memory import reuse_freed_memory
from snnc.utils.validate import positive_int, seed_value

log = logging.getLogger(__name__)

CHECK_SAMPLES = 128  # ANN-vs-SNN check at conversion: enough to catch a broken conversion, cheap


def select_calibration(x: np.ndarray, n: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """At most ``n`` samples of ``x``: a seeded random subset, in the original order."""
    if n <= 0:
        raise CalibrationError(f"the number of calibration samples must be positive, got {n}")
    if len(x) <= n:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx]


@reuse_freed_memory()
def convert(
    model: Any,
    calib: np.ndarray | None = None,
    *,
    timesteps: int | Sequence[int] = DEFAULT_TIMESTEPS,
    threshold: str = DEFAULT_THRESHOLD,
    granularity: str = DEFAULT_GRANULARITY,
    maxpool: str = DEFAULT_MAXPOOL,
    calibration: str = DEFAULT_CALIBRATION,
    neuron: str = DEFAULT_NEURON,
    message_bits: int = DEFAULT_MESSAGE_BITS,
    passes: str | None = None,
    quantize: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    check: bool = True,
    check_samples: int = CHECK_SAMPLES,
    device: str = "cpu",
    store: str = "auto",
    spill_dir: str | os.PathLike | None = None,
    progress=None,
    print_after: Callable[[str, str], None] | None = None,
) -> SpikingModel:
    """Import ``model`` (ONNX path / ModelProto / torch module), check the import against
    the original, run the pass pipeline and return the :class:`SpikingModel`.

    ``calib`` (array ``[N, ...]``, or the path of an NPZ file with array ``x``) provides
    the activations thresholds are chosen from;
    without it the conversion refuses (thresholds come from data). ``calibration``
    (``"none"``, ``"light"``, ``"advanced"``) appends the layer-wise calibration passes,
    which calibrate for ``timesteps``: one T, or a list (``[8, 16, 32]``: one "anytime"
    artifact calibrated for every listed T, whose default T is the largest; the list is kept
    as :attr:`SpikingModel.calibrated_for`); ``neuron`` picks the spiking neuron (``if``, or a
    low-latency variant: ``signed``, ``burst:K``, ``signed-burst:K``; see the ``if_neuron``
    op); ``message_bits`` is the signed payload of every graded spike of an attention network
    (transformers: see :mod:`snnc.passes.messages`); ``passes`` replaces the whole pipeline
    (calibration and neuron included). ``quantize`` (``"loihi2"``) makes the calibration
    hardware-aware: the SNN is put on that target's fixed-point grid (the ``lava-fixed``
    backend's) before the calibration passes, which then calibrate the quantised network
    (:mod:`snnc.passes.quantize`); the artifact records it in ``provenance["quantized"]``.

    ``device`` (``cpu``, ``cuda``, ``cuda:N``) is where the passes run. ``store`` says
    where the layer-wise calibration keeps the spike trains between layers (see
    :class:`~snnc.passes.PassContext`): by default in memory up to 1 GiB, then in
    temporary files under ``spill_dir`` (default: the system's temporary directory), so
    memory does not grow with the number of calibration samples. The import check and
    the ANN-vs-SNN check after conversion use the first ``check_samples`` samples.

    Under torchrun (see :mod:`snnc.parallel`) every rank calls ``convert`` with the same
    arguments; each works on its shard of the samples and all return the same model.
    """
    steps = calibration_timesteps(timesteps)
    timesteps = steps[-1]
    check_samples = positive_int(check_samples, "check_samples")
    store = _store_choice(store)
    device = resolve_device(device)
    calib_samples = positive_int(calib_samples, "calib_samples")
    batch_size = positive_int(batch_size, "batch_size")
    seed = seed_value(seed)
    for name, fn in (("progress", progress), ("print_after", print_after)):
        if fn not in (None, False) and not callable(fn):
            raise DataError(f"{name} must be a callable or None, got {type(fn).__name__}")
    if passes is not None and neuron != DEFAULT_NEURON:
        raise DataError(f"neuron={neuron!r} sets the default pipeline's neuron; with passes=..., write it as insert-if{{neuron=...}}")
    if passes is not None and message_bits != DEFAULT_MESSAGE_BITS:
        raise DataError(f"message_bits={message_bits!r} sets the default pipeline's; with passes=..., write it as insert-if{{message_bits=...}}")
    if passes is not None and quantize is not None:
        raise DataError(f"quantize={quantize!r} sets the default pipeline's; with passes=..., put quantize{{target={quantize}}} after insert-if")
    pipeline_text = passes if passes is not None else default_pipeline(threshold, granularity, maxpool, calibration, neuron, message_bits, quantize)
    pipeline = parse_pipeline(pipeline_text)  # fail fast on a bad pipeline, before any work
    _check_quantize_targets(pipeline, timesteps)
    x_cal = select_calibration(calibration_data(calib), calib_samples, seed)
    imported = import_model(model, input_shape=x_cal.shape[1:])
    ann = imported.graph
    check_input(ann, x_cal)
    check_run_budget(ann, timesteps, len(x_cal), what="calibration")
    import_report = None
    if check:
        import_report = _check_import_sharded(ann, imported, x_cal[:check_samples], batch_size)

    ctx = PassContext(
        calib=x_cal, timesteps=timesteps, timesteps_all=steps if len(steps) > 1 else (), batch_size=batch_size, seed=seed,
        progress=progress or _null, device=device, store=store, spill_dir=None if spill_dir is None else os.fspath(spill_dir),
    )  # fmt: skip
    ctx.notices.extend(ann.meta.get("notices", []))

    # The ANN kept for evaluation is the imported one minus output post-processing.
    ann_ref = ann.clone()
    run_passes(ann_ref, parse_pipeline("canonicalize"), PassContext())

    snn = ann.clone()
    results = run_passes(snn, pipeline, ctx, print_after=print_after)
    if snn.stage != "snn":
        raise PassError(
            f"the pipeline {pipeline_text!r} leaves the graph in the {snn.stage.upper()} stage; it must end with insert-if "
            "(or another pass producing the SNN stage)"
        )
    snn.name = ann.name
    provenance: dict[str, Any] = {
        "source": imported.source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pipeline": format_pipeline(pipeline),
        "passes": _pass_records(results),
        "timesteps": int(timesteps),
        "calibration": calibration_level([p.name for p in pipeline]),
        "calibration_samples": int(len(x_cal)),
        "seed": seed,
        "ranks": ctx.group.world,
        "import_check": import_report,
        "notices": ctx.notices,
        "records": ctx.records,
        # which ANN node each spiking node replaced (if_neuron -> ReLU): the report's per-layer comparison
        "ann_names": dict(ctx.ann_names),
    }
    if len(steps) > 1:
        provenance["calibrated_for"] = list(steps)
    if ctx.quantizer is not None:
        provenance["quantized"] = ctx.quantizer.describe()
    sm = SpikingModel(snn, ann_ref, provenance, ctx.ann_reference)
    if check:
        sm.provenance["conversion_check"] = _conversion_check(sm, x_cal[:check_samples], timesteps, progress, device)
    return sm


@reuse_freed_memory()
def calibrate(
    model: SpikingModel | str | os.PathLike,
    calib: np.ndarray,
    *,
    timesteps: int | Sequence[int] | None = None,
    calibration: str = "light",
    passes: str | None = None,
    quantize: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    check: bool = True,
    check_samples: int = CHECK_SAMPLES,
    device: str = "cpu",
    store: str = "auto",
    spill_dir: str | os.PathLike | None = None,
    progress=None,
) -> SpikingModel:
    """Run layer-wise calibration passes on a converted model, a loaded ``.snn`` included,
    for ``timesteps`` (default: the T, or list of T, it was calibrated for; a list calibrates
    one artifact for all of them, as in :func:`convert`): e.g. re-calibrate a saved model
    for another T. ``calibration`` (``light`` / ``advanced``) picks the passes, or ``passes``
    gives any pipeline of SNN-stage passes. The targets are the ANN the artifact stores
    (``ann_reference``). ``quantize`` (``"loihi2"``) calibrates as quantised for that target,
    as in :func:`convert`. Returns a new model; ``model`` is not changed. ``device``,
    ``store``, ``spill_dir`` and ``check_samples`` are as in :func:`convert`."""
    sm = model if isinstance(model, SpikingModel) else load(model)
    check_samples = positive_int(check_samples, "check_samples")
    store = _store_choice(store)
    device = resolve_device(device)
    steps = calibration_timesteps(sm.calibrated_for if timesteps is None else timesteps)
    T = steps[-1]
    calib_samples = positive_int(calib_samples, "calib_samples")
    batch_size = positive_int(batch_size, "batch_size")
    seed = seed_value(seed)
    if passes is None:
        if calibration not in CALIBRATION_PIPELINES or not CALIBRATION_PIPELINES[calibration]:
            levels = [k for k, v in CALIBRATION_PIPELINES.items() if v]
            raise PassError(f"calibration {calibration!r} has no passes to run; choose one of {', '.join(levels)} (or give passes=...)")
        passes = CALIBRATION_PIPELINES[calibration]
    elif quantize is not None:
        raise DataError(f"quantize={quantize!r} goes with calibration=...; with passes=..., put quantize{{target={quantize}}} first")
    if quantize is not None:
        passes = f"quantize{{target={quantize}}},{passes}"
    pipeline = parse_pipeline(passes)
    _check_quantize_targets(pipeline, T)
    wrong = [p.name for p in pipeline if p.requires_stage != "snn"]
    if wrong:
        raise PassError(f"{', '.join(wrong)} run(s) on the ANN; a converted model takes SNN-stage passes only (calibrate-*, normalize-weights)")
    reference, notices = sm.ann_reference, []
    if reference is None:
        reference = sm.ann
        notices.append(
            "this artifact has no ann_reference graph (written by an older snnc): the calibration targets come from its ANN "
            "(BatchNorm not folded, so equal up to float rounding)"
        )
    x_cal = select_calibration(calibration_data(calib), calib_samples, seed)
    check_input(sm.snn, x_cal)
    check_run_budget(sm.snn, T, len(x_cal), what="calibration")
    prov = copy.deepcopy(sm.provenance)
    ctx = PassContext(
        calib=x_cal, timesteps=T, timesteps_all=steps if len(steps) > 1 else (), batch_size=batch_size, seed=seed, progress=progress or _null, notices=list(prov.get("notices", [])) + notices,
        records=dict(prov.get("records") or {}), ann_reference=reference, ann_names=dict(prov.get("ann_names") or {}),
        device=device, store=store, spill_dir=None if spill_dir is None else os.fspath(spill_dir),
    )  # fmt: skip
    snn = sm.snn.clone()
    results = run_passes(snn, pipeline, ctx)
    names = [p["name"] for p in prov.get("passes", [])] + [r.name for r in results]
    prov.update(
        {
            "pipeline": ",".join(x for x in (prov.get("pipeline"), format_pipeline(pipeline)) if x),
            "passes": prov.get("passes", []) + _pass_records(results),
            "timesteps": T,
            "calibration": calibration_level(names),
            "calibration_samples": int(len(x_cal)),
            "notices": ctx.notices,
            "records": ctx.records,
            "recalibrated": {
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "from_timesteps": sm.timesteps,
                "timesteps": T,
                **({"calibrated_for": list(steps)} if len(steps) > 1 else {}),
                "passes": format_pipeline(pipeline),
                "seed": seed,
            },
        }
    )
    prov.pop("conversion_check", None)
    prov.pop("calibrated_for", None)
    if ctx.quantizer is not None:
        prov["quantized"] = ctx.quantizer.describe()
    elif prov.pop("quantized", None) is not None:
        prov["notices"] = prov.get("notices", []) + [
            "this artifact was calibrated as quantised (--quantize) and was now re-calibrated without it: its layers may have left "
            "the target's grid; re-calibrate with --quantize to keep the calibration hardware-aware"
        ]
    if len(steps) > 1:
        prov["calibrated_for"] = list(steps)
    out = SpikingModel(snn, sm.ann, prov, sm.ann_reference)
    if check:
        out.provenance["conversion_check"] = _conversion_check(out, x_cal[:check_samples], T, progress, device)
    return out


def _check_quantize_targets(pipeline, timesteps: int) -> None:
    """Fail fast (before import and calibration) on a quantize pass whose target has no
    quantiser here (unknown name, backend not installed)."""
    from snnc.backend import get_quantizer

    for p in pipeline:
        if p.name == "quantize":
            get_quantizer(p.options.target, timesteps)


def calibration_timesteps(timesteps: Any) -> tuple[int, ...]:
    """The T values to calibrate for, sorted and distinct: one positive int, or a non-empty
    list of them (``[8, 16, 32]``); a DataError otherwise."""
    if isinstance(timesteps, (list, tuple, range, np.ndarray)):
        return tuple(check_timesteps(list(timesteps)))
    return (positive_int(timesteps, "timesteps"),)


def calibration_data(calib: Any) -> np.ndarray:
    """Calibration samples from an array ``[N, ...]`` or the path of an NPZ file with array x."""
    if calib is None:
        raise CalibrationError(
            "no calibration data: snnc chooses every firing threshold from the network's activations on real inputs. "
            "Pass --calib FILE.npz (array x with a few hundred training samples) or calib=array in the API."
        )
    if isinstance(calib, (str, os.PathLike)):
        calib = load_npz(calib, what="calibration file")["x"]
    return as_batch(calib, "calibration data")


def _pass_records(results) -> list[dict[str, Any]]:
    """What the provenance keeps of each pass that ran."""
    return [{"name": r.name, "options": r.options, "changed": r.changed, "seconds": round(r.seconds, 4)} for r in results]


def calibration_level(pass_names: list[str]) -> str:
    """``none`` / ``light`` / ``advanced`` for the calibration passes of a pipeline, or the
    passes themselves when they match no level."""
    used = ",".join(n for n in pass_names if n.startswith("calibrate-"))
    for level, passes in CALIBRATION_PIPELINES.items():
        if used == passes:
            return level
    return used


def _null(description: str, total: int):
    from snnc.passes.base import null_progress

    return null_progress(description, total)


def _store_choice(store: str) -> str:
    if store not in STORE_CHOICES:
        raise DataError(f"store must be one of {', '.join(STORE_CHOICES)}, got {store!r}")
    return store


def _check_import_sharded(ann, imported, x: np.ndarray, batch_size: int) -> dict[str, Any]:
    """The import check (:func:`check_import`) on ``x``, each rank checking its shard;
    the largest errors over the ranks are reported."""
    group = parallel.current()
    if len(x) < group.world:  # too few to share: every rank checks them all
        return check_import(ann, imported.reference, x, reference_name=imported.reference_name, batch_size=batch_size)
    mine = group.shard(len(x))
    report = check_import(ann, imported.reference, x[mine.start : mine.stop], reference_name=imported.reference_name, batch_size=batch_size)
    if group.distributed:
        outs = report["outputs"]
        worst = group.all_reduce(torch.tensor([[o["max_abs_error"], o["max_abs_reference"]] for o in outs], dtype=torch.float64), "max")
        for o, (err, ref) in zip(outs, worst.tolist()):
            o["max_abs_error"], o["max_abs_reference"] = err, ref
        report["max_abs_error"] = max(o["max_abs_error"] for o in outs)
        report["samples"] = int(len(x))
    return report


def _simulate_sharded(model: SpikingModel, x: np.ndarray, steps: list[int], *, ann: bool = False, **kwargs) -> tuple[SimResult, np.ndarray | None]:
    """``model.simulate(x, steps, **kwargs)`` (and the ANN's outputs), each rank
    simulating its shard of ``x``; every rank gets all outputs, in order, and the spike
    rates over all samples."""
    group = parallel.current()
    if len(x) < group.world or not group.distributed:  # (too few to share: every rank runs them all)
        return model.simulate(x, steps, **kwargs), model.ann_outputs(x) if ann else None
    mine = group.shard(len(x))
    part = x[mine.start : mine.stop]
    res = model.simulate(part, steps, **kwargs)
    outputs = {t: [group.gather_rows(y, len(x)) for y in ys] for t, ys in res.outputs.items()}
    names = sorted(res.spike_rates)
    rates = group.all_reduce(torch.tensor([res.spike_rates[k] * len(part) for k in names], dtype=torch.float64)) / len(x)
    full = SimResult(outputs, dict(zip(names, rates.tolist())), len(x), res.details)
    return full, group.gather_rows(model.ann_outputs(part), len(x)) if ann else None


def _conversion_check(model: SpikingModel, x: np.ndarray, timesteps: int, progress, device: str = "cpu") -> dict[str, Any]:
    """ANN vs SNN on calibration samples at the conversion's T (recorded, not enforced)."""
    res, ann = _simulate_sharded(model, x, [timesteps], ann=True, progress=progress, device=device)
    snn = res.output(timesteps)
    return {
        "samples": int(len(x)),
        "timesteps": int(timesteps),
        "agreement": agreement(ann, snn),
        "max_abs_output_error": float(np.max(np.abs(ann - snn))),
        "mean_abs_output_error": float(np.mean(np.abs(ann - snn))),
        "spike_rates": res.spike_rates,
    }


@reuse_freed_memory()
def evaluate(
    model: SpikingModel | str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    timesteps: int | Sequence[int] = DEFAULT_EVAL_TIMESTEPS,
    backend: str = "reference",
    device: str | None = None,
    batch_size: int | None = None,
    encoding: str = "direct",
    compare_reference: bool = False,
    progress=None,
    placement=None,
) -> dict[str, Any]:
    """Accuracy (with labels) and ANN agreement of the SNN for each T.

    Returns ``{"backend", "ann_accuracy", "results": [{"timesteps", "accuracy", "agreement"}],
    "samples", "spike_rates", "details"}``; agreement is the fraction of samples whose SNN
    argmax equals the ANN's; ``details`` holds what the backend reports about itself (e.g.
    lava-fixed's deployment report). With ``compare_reference`` each result also holds the
    float SNN's (reference simulator's) ``reference_accuracy`` and the ``reference_agreement``.
    ``placement`` (a placement file from ``snnc map``, its content, or a Placement) runs the
    SNN as placed on chip cores (lava / lava-fixed; ``details["placement"]`` says how many
    blocks, cores, chips and Lava processes ran).
    """
    sm = model if isinstance(model, SpikingModel) else load(model)
    x = as_batch(x)
    steps = check_timesteps(timesteps)
    if y is not None:
        y = check_labels(y, len(x), sm.snn.outputs[0].shape)
    extra = {"placement": placement} if placement is not None else {}
    res, ann_out = _simulate_sharded(sm, x, steps, ann=True, backend=backend, device=device, batch_size=batch_size, encoding=encoding, progress=progress, **extra)
    ref = _simulate_sharded(sm, x, steps, encoding=encoding, progress=progress)[0] if compare_reference and backend != "reference" else None
    ann_pred = predictions(ann_out)
    results = []
    for t in steps:
        out = res.output(t)
        row = {
            "timesteps": t,
            "accuracy": accuracy(out, y) if y is not None else None,
            "agreement": float(np.mean(predictions(out) == ann_pred)),
        }
        if ref is not None:
            row["reference_accuracy"] = accuracy(ref.output(t), y) if y is not None else None
            row["reference_agreement"] = agreement(out, ref.output(t))
        results.append(row)
    return {
        "backend": backend,
        "ann_accuracy": accuracy(ann_out, y) if y is not None else None,
        "results": results,
        "samples": int(len(x)),
        "spike_rates": res.spike_rates,
        "details": res.details,
    }
