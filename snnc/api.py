"""The Python API: ``convert``, ``load``, ``evaluate`` and :class:`SpikingModel`.

>>> model = snnc.convert("model.onnx", calib=x_calib, timesteps=32)
>>> y = model.run(x_test)                      # time-averaged outputs, reference simulator
>>> model.save("model.snn")
>>> snnc.evaluate("model.snn", x_test, y_test, timesteps=[8, 16, 32])
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from snnc.backend import get_backend
from snnc.defaults import DEFAULT_CALIB_SAMPLES, DEFAULT_CALIBRATION
from snnc.errors import CalibrationError, DataError
from snnc.frontends import import_model
from snnc.frontends.check import check_import
from snnc.ir.graph import Graph
from snnc.ir.interpreter import check_input, run_ann
from snnc.ir.serialize import load_artifact, save_artifact
from snnc.passes import PassContext, default_pipeline, format_pipeline, parse_pipeline, run_passes
from snnc.simulator.reference import SimResult

log = logging.getLogger(__name__)

CHECK_SAMPLES = 128  # ANN-vs-SNN check at conversion: enough to catch a broken conversion, cheap


class SpikingModel:
    """A converted network: the SNN-stage graph, the ANN it came from, and provenance."""

    def __init__(self, snn: Graph, ann: Graph, provenance: dict[str, Any]):
        self.snn = snn
        self.ann = ann
        self.provenance = provenance

    @property
    def timesteps(self) -> int:
        return int(self.provenance.get("timesteps", 32))

    def simulate(
        self,
        x: np.ndarray,
        timesteps: int | Sequence[int] | None = None,
        *,
        backend: str = "reference",
        device: str | None = None,
        batch_size: int | None = None,
        encoding: str = "direct",
        seed: int = 0,
        progress=None,
    ) -> SimResult:
        """Run the SNN on ``x`` for one or several T; returns outputs per T and spike rates.
        ``device`` ("cpu", "cuda", "cuda:1", ...) defaults to the backend's choice (the
        reference: CPU; spikingjelly: CUDA when available)."""
        x = _as_array(x)
        check_input(self.snn, x)
        steps = [self.timesteps] if timesteps is None else ([timesteps] if isinstance(timesteps, int) else list(timesteps))
        be = get_backend(backend, **({"device": device} if device else {}))
        be.check(self.snn)
        return be.run(self.snn, x, steps, batch_size=batch_size, encoding=encoding, seed=seed, progress=progress)

    def run(self, x: np.ndarray, timesteps: int | None = None, backend: str = "reference", **kwargs) -> np.ndarray:
        """Time-averaged SNN outputs (first graph output) after ``timesteps`` steps."""
        T = self.timesteps if timesteps is None else int(timesteps)
        return self.simulate(x, T, backend=backend, **kwargs).output(T)

    def to_spikingjelly(self, device: str = "cpu"):
        """The SNN as a SpikingJelly 2.0 multi-step ``nn.Module`` to embed in your own code:
        ``net(x, timesteps)`` returns the readout after ``timesteps`` steps of direct-coded
        input ``x`` ([B, ...]); ``net.sequence(x, T)`` returns it after every step. Needs the
        ``spikingjelly`` backend package (installed by ``make setup``)."""
        return get_backend("spikingjelly", device=device).lower(self.snn)

    def export_nir(self, path: str | os.PathLike, reset: str = "soft", dt: float = 1e-4):
        """Write the SNN as a NIR file (see :mod:`snnc.export.nir`): ``reset="soft"`` is this
        network exactly, ``"hard"`` the reset-to-zero IF variant SpikingJelly imports.
        Returns an :class:`~snnc.export.nir.ExportSummary`."""
        from snnc.export.nir import export_nir

        return export_nir(self, path, reset=reset, dt=dt)

    def ann_outputs(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The original ANN's outputs (post-processing stripped) on ``x``."""
        return run_ann(self.ann, _as_array(x), batch_size=batch_size)[0]

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.snn`` artifact atomically."""
        save_artifact(path, {"snn": self.snn, "ann": self.ann}, self.provenance)

    def thresholds(self) -> list[dict[str, Any]]:
        """Per-layer neuron summary: name, shape, threshold (mean/min/max), reset, v_init mean."""
        rows = []
        for n in self.snn.find("if_neuron"):
            th = n.params["threshold"]
            rows.append(
                {
                    "layer": n.name,
                    "shape": list(n.output.shape),
                    "neurons": int(np.prod(n.output.shape)),
                    "threshold": float(th.mean()),
                    "threshold_min": float(th.min()),
                    "threshold_max": float(th.max()),
                    "per_channel": th.size > 1,
                    "reset": n.attr("reset"),
                    "v_init_over_threshold": float(np.mean(n.params["v_init"] / th)),
                }
            )
        return rows

    def __repr__(self) -> str:
        return f"SpikingModel({len(self.snn.nodes)} nodes, {len(self.snn.find('if_neuron'))} spiking layers, T={self.timesteps})"


def _as_array(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise DataError(f"input must be a batch [N, ...]; got shape {list(x.shape)}")
    return x


def select_calibration(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` samples of ``x``: a seeded random subset, in the original order."""
    if n <= 0:
        raise CalibrationError(f"the number of calibration samples must be positive, got {n}")
    if len(x) <= n:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx]


def convert(
    model: Any,
    calib: np.ndarray | None = None,
    *,
    timesteps: int = 32,
    threshold: str = "percentile:98",
    granularity: str = "channel",
    maxpool: str = "gate",
    calibration: str = DEFAULT_CALIBRATION,
    passes: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    batch_size: int = 128,
    seed: int = 0,
    check: bool = True,
    progress=None,
    print_after: Callable[[str, str], None] | None = None,
) -> SpikingModel:
    """Import ``model`` (ONNX path / ModelProto / torch module), check the import against
    the original, run the pass pipeline and return the :class:`SpikingModel`.

    ``calib`` (array ``[N, ...]``) provides the activations thresholds are chosen from;
    without it the conversion refuses (thresholds come from data). ``calibration``
    (``"none"``, ``"light"``, ``"advanced"``) appends the layer-wise calibration passes,
    which calibrate for ``timesteps``; ``passes`` replaces the whole pipeline (calibration
    included).
    """
    if timesteps < 1:
        raise DataError(f"timesteps must be a positive integer, got {timesteps}")
    if calib is None:
        raise CalibrationError(
            "no calibration data: snnc chooses every firing threshold from the network's activations on real inputs. "
            "Pass --calib FILE.npz (array x with a few hundred training samples) or calib=array in the API."
        )
    pipeline_text = passes or default_pipeline(threshold, granularity, maxpool, calibration)
    pipeline = parse_pipeline(pipeline_text)  # fail fast on a bad pipeline, before any work
    calib_all = _as_array(calib)
    x_cal = select_calibration(calib_all, calib_samples, seed)
    imported = import_model(model, input_shape=x_cal.shape[1:])
    ann = imported.graph
    check_input(ann, x_cal)
    import_report = None
    if check:
        import_report = check_import(ann, imported.reference, x_cal, reference_name=imported.reference_name, batch_size=batch_size)

    ctx = PassContext(calib=x_cal, timesteps=timesteps, batch_size=batch_size, seed=seed, progress=progress or _null)
    ctx.notices.extend(ann.meta.get("notices", []))

    # The ANN kept for evaluation is the imported one minus output post-processing.
    ann_ref = ann.clone()
    run_passes(ann_ref, parse_pipeline("canonicalize"), PassContext())

    snn = ann.clone()
    results = run_passes(snn, pipeline, ctx, print_after=print_after)
    if snn.stage != "snn":
        from snnc.errors import PassError

        raise PassError(
            f"the pipeline {pipeline_text!r} leaves the graph in the {snn.stage.upper()} stage; it must end with insert-if "
            "(or another pass producing the SNN stage)"
        )
    snn.name = ann.name
    provenance: dict[str, Any] = {
        "source": imported.source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pipeline": format_pipeline(pipeline),
        "passes": [{"name": r.name, "options": r.options, "changed": r.changed, "seconds": round(r.seconds, 4)} for r in results],
        "timesteps": int(timesteps),
        "calibration": calibration_level([p.name for p in pipeline]),
        "calibration_samples": int(len(x_cal)),
        "seed": seed,
        "import_check": import_report,
        "notices": ctx.notices,
        "records": ctx.records,
        # which ANN node each spiking node replaced (if_neuron -> ReLU): the report's per-layer comparison
        "ann_names": dict(ctx.ann_names),
    }
    sm = SpikingModel(snn, ann_ref, provenance)
    if check:
        sm.provenance["conversion_check"] = _conversion_check(sm, x_cal[:CHECK_SAMPLES], timesteps, progress)
    return sm


def calibration_level(pass_names: list[str]) -> str:
    """``none`` / ``light`` / ``advanced`` for the calibration passes of a pipeline, or the
    passes themselves when they match no level."""
    from snnc.passes import CALIBRATION_PIPELINES

    used = ",".join(n for n in pass_names if n.startswith("calibrate-"))
    for level, passes in CALIBRATION_PIPELINES.items():
        if used == passes:
            return level
    return used


def _null(description: str, total: int):
    from snnc.passes.base import null_progress

    return null_progress(description, total)


def _conversion_check(model: SpikingModel, x: np.ndarray, timesteps: int, progress) -> dict[str, Any]:
    """ANN vs SNN on calibration samples at the conversion's T (recorded, not enforced)."""
    ann = model.ann_outputs(x)
    res = model.simulate(x, timesteps, progress=progress)
    snn = res.output(timesteps)
    return {
        "samples": int(len(x)),
        "timesteps": int(timesteps),
        "agreement": float(np.mean(_argmax(ann) == _argmax(snn))),
        "max_abs_output_error": float(np.max(np.abs(ann - snn))),
        "mean_abs_output_error": float(np.mean(np.abs(ann - snn))),
        "spike_rates": res.spike_rates,
    }


def _argmax(out: np.ndarray) -> np.ndarray:
    """Predicted classes: the argmax over axis 1; one logit (``[N]`` or ``[N, 1, ...]``) is a
    binary decision, positive = class 1."""
    if out.ndim == 1:
        return (out > 0).astype(np.int64)
    if out.shape[1] == 1:
        return (out[:, 0] > 0).astype(np.int64)
    return out.argmax(axis=1)


def load(path: str | os.PathLike) -> SpikingModel:
    """Load a ``.snn`` artifact written by :meth:`SpikingModel.save` (no pickle)."""
    graphs, manifest = load_artifact(path)
    from snnc.errors import ArtifactError

    if "snn" not in graphs or "ann" not in graphs:
        raise ArtifactError(f"{str(path)!r} lacks the 'snn' or 'ann' graph; re-create it with `snnc convert`")
    return SpikingModel(graphs["snn"], graphs["ann"], manifest.get("provenance", {}))


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    pred = _argmax(outputs)
    if pred.shape != labels.shape:
        raise DataError(f"labels y have shape {list(labels.shape)} but the model's predictions have shape {list(pred.shape)}")
    return float(np.mean(pred == labels))


def evaluate(
    model: SpikingModel | str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    timesteps: int | Sequence[int] = (8, 16, 32),
    backend: str = "reference",
    device: str | None = None,
    batch_size: int | None = None,
    encoding: str = "direct",
    compare_reference: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Accuracy (with labels) and ANN agreement of the SNN for each T.

    Returns ``{"backend", "ann_accuracy", "results": [{"timesteps", "accuracy", "agreement"}],
    "samples", "spike_rates", "details"}``; agreement is the fraction of samples whose SNN
    argmax equals the ANN's; ``details`` holds what the backend reports about itself (e.g.
    lava-fixed's deployment report). With ``compare_reference`` each result also holds the
    float SNN's (reference simulator's) ``reference_accuracy`` and the ``reference_agreement``.
    """
    sm = model if isinstance(model, SpikingModel) else load(model)
    x = _as_array(x)
    steps = [timesteps] if isinstance(timesteps, int) else sorted(set(int(t) for t in timesteps))
    ann_out = sm.ann_outputs(x)
    res = sm.simulate(x, steps, backend=backend, device=device, batch_size=batch_size, encoding=encoding, progress=progress)
    ref = sm.simulate(x, steps, encoding=encoding, progress=progress) if compare_reference and backend != "reference" else None
    ann_pred = _argmax(ann_out)
    results = []
    for t in steps:
        out = res.output(t)
        row = {
            "timesteps": t,
            "accuracy": accuracy(out, y) if y is not None else None,
            "agreement": float(np.mean(_argmax(out) == ann_pred)),
        }
        if ref is not None:
            row["reference_accuracy"] = accuracy(ref.output(t), y) if y is not None else None
            row["reference_agreement"] = float(np.mean(_argmax(out) == _argmax(ref.output(t))))
        results.append(row)
    return {
        "backend": backend,
        "ann_accuracy": accuracy(ann_out, y) if y is not None else None,
        "results": results,
        "samples": int(len(x)),
        "spike_rates": res.spike_rates,
        "details": res.details,
    }
