"""Hardware-aware quantisation: the SNN put on a fixed-point target's grid before calibration.

``quantize{target=loihi2}`` asks the target's backend (through the backend registry: the core
imports no backend) for its quantiser and projects the whole float graph onto the grid that
backend's fixed-point lowering maps it to: the weights and initial potentials become their
dequantised fixed-point values and the per-layer scales are pinned in the graph's meta, so the
lowering re-quantises the artifact losslessly and the reference simulator runs the network the
hardware runs. The quantiser stays in the pass context: the calibration passes after it
(``calibrate-weights``, ``calibrate-bias``, ``calibrate-potential``) then measure the quantised
network, so their corrections absorb the quantisation error, and put every layer they change
back on the grid. ``snnc convert --quantize loihi2`` inserts the pass after insert-if.
"""

from __future__ import annotations

from dataclasses import dataclass

from snnc.errors import BackendError
from snnc.ir.graph import Graph
from snnc.passes.base import Pass, PassContext, register_pass


@register_pass
class Quantize(Pass):
    """After quantize, every synaptic weight and initial potential of the SNN lies on the
    fixed-point grid of the target's lowering (target=loihi2: the lava-fixed backend's), with
    the per-layer scales recorded in the graph's meta so that the target re-quantises the
    graph losslessly; the calibration passes after it calibrate that quantised network and
    keep each layer they change on the grid. The graph stays in the SNN stage."""

    name = "quantize"
    requires_stage = "snn"

    @dataclass
    class Options:
        target: str = "loihi2"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        from snnc.backend import get_quantizer

        target = self.options.target
        quantizer = get_quantizer(target, max(ctx.calibrated_for))
        try:
            layers = quantizer.project(graph)
        except BackendError as e:
            raise BackendError(f"quantize{{target={target}}}: the network cannot be quantised for {target}: {e}") from e
        ctx.quantizer = quantizer
        ctx.record(self.name, {**quantizer.describe(), "layers": layers})
        return True
