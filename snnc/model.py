"""The converted model: :class:`SpikingModel` and the ``.snn`` artifact it is saved as.

A model holds three graphs and its provenance:

* ``snn``: the SNN-stage graph backends run;
* ``ann``: the ANN it came from (imported, output post-processing stripped): what the SNN is
  evaluated against;
* ``ann_reference``: the ANN exactly as ``insert-if`` found it (BatchNorm folded, thresholds
  chosen): the targets of the layer-wise calibration passes, so that they can run again on a
  loaded artifact (e.g. re-calibrate a saved model for another T, :func:`snnc.calibrate`).

Analyses and exporters import this module, never the API.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from snnc.backend import get_backend
from snnc.defaults import DEFAULT_NIR_DT, DEFAULT_SEED, DEFAULT_TIMESTEPS
from snnc.errors import ArtifactError, BackendError, DataError
from snnc.ir.executor import check_input, run_ann
from snnc.ir.graph import Graph
from snnc.ir.serialize import load_artifact, save_artifact
from snnc.simulator.budget import check_run_budget
from snnc.simulator.reference import SimResult, check_timesteps
from snnc.utils.validate import check_finite, positive_int, seed_value


class SpikingModel:
    """A converted network: the SNN-stage graph, the ANN it came from, and provenance."""

    def __init__(self, snn: Graph, ann: Graph, provenance: dict[str, Any], ann_reference: Graph | None = None):
        self.snn = snn
        self.ann = ann
        self.provenance = provenance
        self.ann_reference = ann_reference

    @property
    def timesteps(self) -> int:
        """The T the model was converted (calibrated) for."""
        T = self.provenance.get("timesteps", DEFAULT_TIMESTEPS)
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ArtifactError(f"the model's stored default T ({T!r}) is not a positive integer; pass the timesteps explicitly (-T)")
        return T

    @property
    def calibrated_for(self) -> list[int]:
        """Every T the model was calibrated for, sorted: ``[timesteps]``, or the list given to
        ``convert`` / ``calibrate`` (``timesteps=[8, 16, 32]``: one "anytime" artifact for all
        of them; provenance ``calibrated_for``, whose largest is :attr:`timesteps`)."""
        T = self.timesteps
        listed = self.provenance.get("calibrated_for")
        if listed is None:
            return [T]
        ok = (
            isinstance(listed, list)
            and 0 < len(listed) <= 64
            and all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= T for t in listed)
            and listed == sorted(set(listed))
            and listed[-1] == T
        )
        if not ok:
            raise ArtifactError(
                f"the model's stored calibrated_for ({str(listed)[:80]}) is not a sorted list of distinct positive integers ending in "
                f"its default T={T}; the artifact is corrupt or was modified: re-create it with `snnc convert`"
            )
        return list(listed)

    def simulate(
        self,
        x: np.ndarray,
        timesteps: int | Sequence[int] | None = None,
        *,
        backend: str = "reference",
        device: str | None = None,
        batch_size: int | None = None,
        encoding: str = "direct",
        seed: int = DEFAULT_SEED,
        progress=None,
        placement=None,
    ) -> SimResult:
        """Run the SNN on ``x`` for one or several T; returns outputs per T and spike rates.
        ``device`` ("cpu", "cuda", "cuda:1", ...) defaults to the backend's choice (the
        reference: CPU; spikingjelly: CUDA when available). ``placement`` (a placement file's
        path or content, or a :class:`~snnc.mapping.placement_file.Placement`) runs the
        network as placed on chip cores, on a backend that emulates placements (lava,
        lava-fixed); the outputs equal the unplaced run's."""
        x = as_batch(x)
        check_input(self.snn, x)
        steps = check_timesteps(self.timesteps if timesteps is None else timesteps)
        if batch_size is not None:
            batch_size = positive_int(batch_size, "batch_size")
        seed = seed_value(seed)
        if progress not in (None, False) and not callable(progress):
            raise DataError(f"progress must be a callable progress(description, total) or None, got {type(progress).__name__}")
        be = get_backend(backend, **({"device": device} if device else {}))
        if placement is not None and not be.runs_placement:
            raise BackendError(f"backend {backend!r} cannot run a placement; emulate it on the lava or lava-fixed backend")
        be.check(self.snn)
        check_run_budget(self.snn, steps, len(x), device=str(getattr(be, "device", "cpu")), steps_in_memory=be.steps_in_memory)
        extra = {}
        if placement is not None:  # a file, its content or a Placement: validated for this graph first
            from snnc.mapping.placement_file import as_placement

            extra["placement"] = as_placement(placement, self.snn)
        return be.run(self.snn, x, steps, batch_size=batch_size, encoding=encoding, seed=seed, progress=progress, **extra)

    def run(self, x: np.ndarray, timesteps: int | None = None, backend: str = "reference", **kwargs) -> np.ndarray:
        """Time-averaged SNN outputs (first graph output) after ``timesteps`` steps."""
        T = self.timesteps if timesteps is None else positive_int(timesteps, "timesteps")
        return self.simulate(x, T, backend=backend, **kwargs).output(T)

    def to_spikingjelly(self, device: str = "cpu"):
        """The SNN as a SpikingJelly 2.0 multi-step ``nn.Module`` to embed in your own code:
        ``net(x, timesteps)`` returns the readout after ``timesteps`` steps of direct-coded
        input ``x`` ([B, ...]); ``net.sequence(x, T)`` returns it after every step. Needs the
        ``spikingjelly`` backend package (installed by ``make setup``)."""
        return get_backend("spikingjelly", device=device).lower(self.snn)

    def export_nir(self, path: str | os.PathLike, reset: str = "soft", dt: float = DEFAULT_NIR_DT):
        """Write the SNN as a NIR file (see :mod:`snnc.export.nir`): ``reset="soft"`` is this
        network exactly, ``"hard"`` the reset-to-zero IF variant SpikingJelly imports.
        Returns an :class:`~snnc.export.nir.ExportSummary`."""
        from snnc.export.nir import export_nir

        return export_nir(self, path, reset=reset, dt=dt)

    def ann_outputs(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The original ANN's outputs (post-processing stripped) on ``x``."""
        return run_ann(self.ann, as_batch(x), batch_size=positive_int(batch_size, "batch_size"))[0]

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.snn`` artifact atomically (a device, a directory or an unwritable
        path is refused with a DataError before anything is serialised)."""
        from snnc.utils.paths import check_output_path

        check_output_path(path, parents=True)
        graphs = {"snn": self.snn, "ann": self.ann}
        if self.ann_reference is not None:
            graphs["ann_reference"] = self.ann_reference
        save_artifact(path, graphs, self.provenance)

    def thresholds(self) -> list[dict[str, Any]]:
        """Per-layer neuron summary: name, shape, threshold (mean/min/max), reset, v_init mean."""
        rows = []
        for n in self.snn.having("neuron"):
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
        Ts = self.calibrated_for
        return f"SpikingModel({len(self.snn.nodes)} nodes, {len(self.snn.having('neuron'))} spiking layers, T={','.join(map(str, Ts))})"


def as_batch(x: Any, what: str = "input") -> np.ndarray:
    """``x`` (array-like or torch tensor) as a float32 batch ``[N, ...]`` with N >= 1 and
    finite values; a DataError naming the first bad sample otherwise."""
    if isinstance(x, (str, bytes, os.PathLike)):
        raise DataError(f"{what} must be an array [N, ...], got the path {str(x)!r}; load it first, e.g. np.load(path)['x']")
    try:
        import torch

        if isinstance(x, torch.Tensor):
            try:
                x = x.detach().to("cpu", torch.float32).numpy()
            except (NotImplementedError, RuntimeError, TypeError) as e:
                raise DataError(f"{what}: cannot read the torch tensor ({type(e).__name__}: {str(e).splitlines()[0][:120]}); give real values on the CPU or a GPU") from None
    except ImportError:  # pragma: no cover
        pass
    try:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(arr.dtype)
        x = arr.astype(np.float32, copy=False)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} must be a numeric array [N, ...]; got {type(x).__name__} ({e})") from None
    if x.ndim < 2:
        raise DataError(f"{what} must be a batch [N, ...]; got shape {list(x.shape)}")
    if len(x) == 0 or x.size == 0:
        raise DataError(f"{what} is empty (shape {list(x.shape)}); give at least one sample")
    check_finite(x, what)
    return x


def load(path: str | os.PathLike) -> SpikingModel:
    """Load a ``.snn`` artifact written by :meth:`SpikingModel.save` (no pickle)."""
    graphs, manifest = load_artifact(path)
    if "snn" not in graphs or "ann" not in graphs:
        raise ArtifactError(f"{str(path)!r} lacks the 'snn' or 'ann' graph; re-create it with `snnc convert`")
    snn, ann, ref = graphs["snn"], graphs["ann"], graphs.get("ann_reference")
    if snn.stage != "snn":  # (the ANN graphs may be at either stage: an SNN-stage graph runs as its own reference)
        raise ArtifactError(
            f"the artifact {str(path)!r} is corrupt or was modified: its graph 'snn' is at the {snn.stage.upper()} stage; "
            "re-create it with `snnc convert`"
        )
    return SpikingModel(snn, ann, manifest.get("provenance", {}), ref)
