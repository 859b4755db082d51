"""Named passes over the snnc IR, registered in one place (this module).

``DEFAULT_PIPELINE`` is what ``snnc convert`` runs; ``--passes`` replaces it with any
pipeline string. Import order below is the registry's listing order.
"""

import math
import re

from snnc.defaults import DEFAULT_BURST_SPIKES, DEFAULT_GRANULARITY, DEFAULT_MAXPOOL, DEFAULT_MESSAGE_BITS, DEFAULT_NEURON, DEFAULT_THRESHOLD
from snnc.errors import PassError
from snnc.passes import balance, calibrate, canonicalize, fold_bn, fuse_synapses, insert_if, normalize  # noqa: E402,F401  (registration)
import snnc.passes.quantize  # noqa: E402,F401  (registration; a module name the quantize= argument below would shadow)
from snnc.passes.base import (
    Pass,
    PassContext,
    PassResult,
    format_pipeline,
    get_pass,
    parse_pipeline,
    register_pass,
    registered_passes,
    run_passes,
)
from snnc.passes.insert_if import NEURONS, neuron_attrs
from snnc.passes.messages import payload_spikes

DEFAULT_PIPELINE = "canonicalize,fold-bn,balance-thresholds,insert-if,fuse-synapses"


CALIBRATION_PIPELINES = {
    "none": "",
    "light": "calibrate-bias",
    "advanced": "calibrate-weights,calibrate-bias,calibrate-potential",
}


def default_pipeline(
    threshold: str = DEFAULT_THRESHOLD,
    granularity: str = DEFAULT_GRANULARITY,
    maxpool: str = DEFAULT_MAXPOOL,
    calibration: str = "none",
    neuron: str = DEFAULT_NEURON,
    message_bits: int = DEFAULT_MESSAGE_BITS,
    quantize: str | None = None,
) -> str:
    """The default pipeline with the user's threshold method (``max``, ``percentile:P``,
    ``mse``), calibration level (``none``, ``light``, ``advanced``), neuron (``if``,
    ``signed``, ``burst:K``, ``signed-burst:K``: :func:`parse_neuron`), for attention
    networks the payload of every message in bits (:mod:`snnc.passes.messages`) and the
    hardware target the calibration quantises for (``quantize``: ``loihi2``; the quantize
    pass goes after insert-if, before the calibration passes: :mod:`snnc.passes.quantize`)."""
    variant, spikes = parse_neuron(neuron)
    payload_spikes(message_bits)  # range check, one message
    if calibration not in CALIBRATION_PIPELINES:
        raise PassError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATION_PIPELINES)}")
    opts = [*threshold_options(threshold), f"granularity={granularity}"]
    for name, value, choices in (("granularity", granularity, ("layer", "channel")), ("maxpool", maxpool, ("gate", "avg"))):
        if value not in choices:
            raise PassError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    insert = [f"maxpool={maxpool}"]
    if variant != "if":
        insert.append(f"neuron={variant}")
    if spikes > 1:
        opts.append(f"spikes={spikes}")
        insert.append(f"spikes={spikes}")
    if message_bits != DEFAULT_MESSAGE_BITS:
        insert.append(f"message_bits={message_bits}")
    pipeline = f"canonicalize,fold-bn,balance-thresholds{{{' '.join(opts)}}},insert-if{{{' '.join(insert)}}}"
    extra = CALIBRATION_PIPELINES[calibration]
    if quantize is not None:
        if not isinstance(quantize, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", quantize):
            raise PassError(f"quantize target {quantize!r} is not a name such as loihi2")
        # The quantiser maps the graph as the chip runs it: synapses fused first, then calibrated as quantised.
        quantized = f"{pipeline},fuse-synapses,quantize{{target={quantize}}}"
        return f"{quantized},{extra}" if extra else quantized
    # fuse-synapses last: it changes only graphs with synapses feeding synapses (for Loihi), exactly
    return f"{pipeline},{extra},fuse-synapses" if extra else f"{pipeline},fuse-synapses"


def parse_neuron(neuron: str) -> tuple[str, int]:
    """``(variant, K)`` of a ``--neuron`` value: ``if``, ``signed``, ``burst[:K]`` or
    ``signed-burst[:K]`` (K = the most spikes per step, 2..255, default 4; 1 for the others)."""
    text = neuron if isinstance(neuron, str) else repr(neuron)
    m = re.fullmatch(r"(if|signed|burst|signed-burst)(?::([0-9]+))?", text)
    if m is None or (m.group(2) is not None and m.group(1) in ("if", "signed")):
        raise PassError(
            f"neuron {text!r} is not one of: {', '.join(NEURONS)} (burst and signed-burst take :K, the most spikes per step, e.g. burst:4)"
        )
    name = m.group(1)
    if name in ("if", "signed"):
        return name, 1
    spikes = int(m.group(2) or DEFAULT_BURST_SPIKES)
    neuron_attrs(name, spikes)  # range check, one message
    return name, spikes


def threshold_options(threshold: str) -> list[str]:
    """The balance-thresholds options of a ``--threshold`` value, parsed strictly: ``max``,
    ``mse`` or ``percentile:P`` with 0 < P <= 100 (nothing else, no extra words)."""
    text = threshold if isinstance(threshold, str) else repr(threshold)
    m = re.fullmatch(r"(max|mse)|percentile:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)", text)
    if m is None:
        raise PassError(f"threshold method {text!r} is not one of: max, mse, percentile:P (e.g. percentile:99.9)")
    if m.group(1):
        return [f"method={m.group(1)}"]
    p = float(m.group(2))
    if not (0 < p <= 100 and math.isfinite(p)):
        raise PassError(f"threshold {text!r}: the percentile must be in (0, 100], e.g. percentile:99.9")
    return ["method=percentile", f"percentile={m.group(2)}"]


__all__ = [
    "CALIBRATION_PIPELINES",
    "DEFAULT_PIPELINE",
    "Pass",
    "PassContext",
    "PassResult",
    "default_pipeline",
    "format_pipeline",
    "get_pass",
    "parse_pipeline",
    "register_pass",
    "registered_passes",
    "run_passes",
]
