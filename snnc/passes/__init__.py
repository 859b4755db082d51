"""Named passes over the snnc IR, registered in one place (this module).

``DEFAULT_PIPELINE`` is what ``snnc convert`` runs; ``--passes`` replaces it with any
pipeline string. Import order below is the registry's listing order.
"""

from snnc.defaults import DEFAULT_GRANULARITY, DEFAULT_MAXPOOL, DEFAULT_THRESHOLD
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
from snnc.passes import canonicalize, fold_bn, balance, insert_if, calibrate, normalize  # noqa: E402,F401  (registration)

DEFAULT_PIPELINE = "canonicalize,fold-bn,balance-thresholds,insert-if"


CALIBRATION_PIPELINES = {
    "none": "",
    "light": "calibrate-bias",
    "advanced": "calibrate-weights,calibrate-bias,calibrate-potential",
}


def default_pipeline(
    threshold: str = DEFAULT_THRESHOLD, granularity: str = DEFAULT_GRANULARITY, maxpool: str = DEFAULT_MAXPOOL, calibration: str = "none"
) -> str:
    """The default pipeline with the user's threshold method (``max``, ``percentile:P``,
    ``mse``) and calibration level (``none``, ``light``, ``advanced``)."""
    if calibration not in CALIBRATION_PIPELINES:
        from snnc.errors import PassError

        raise PassError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATION_PIPELINES)}")
    method, _, arg = threshold.partition(":")
    opts = [f"method={method}", f"granularity={granularity}"]
    if method == "percentile" and arg:
        opts.append(f"percentile={arg}")
    elif arg:
        from snnc.errors import PassError

        raise PassError(f"threshold method {threshold!r}: only percentile takes a value (percentile:99.9)")
    pipeline = f"canonicalize,fold-bn,balance-thresholds{{{' '.join(opts)}}},insert-if{{maxpool={maxpool}}}"
    extra = CALIBRATION_PIPELINES[calibration]
    return f"{pipeline},{extra}" if extra else pipeline


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
