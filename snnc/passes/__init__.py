"""Named passes over the snnc IR, registered in one place (this module).

``DEFAULT_PIPELINE`` is what ``snnc convert`` runs; ``--passes`` replaces it with any
pipeline string. Import order below is the registry's listing order.
"""

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
from snnc.passes import canonicalize, fold_bn, balance, insert_if, normalize  # noqa: E402,F401  (registration)

DEFAULT_PIPELINE = "canonicalize,fold-bn,balance-thresholds,insert-if"


def default_pipeline(threshold: str = "percentile:98", granularity: str = "channel", maxpool: str = "gate") -> str:
    """The default pipeline with the user's threshold method (``max``, ``percentile:P``, ``mse``)."""
    method, _, arg = threshold.partition(":")
    opts = [f"method={method}", f"granularity={granularity}"]
    if method == "percentile" and arg:
        opts.append(f"percentile={arg}")
    elif arg:
        from snnc.errors import PassError

        raise PassError(f"threshold method {threshold!r}: only percentile takes a value (percentile:99.9)")
    return f"canonicalize,fold-bn,balance-thresholds{{{' '.join(opts)}}},insert-if{{maxpool={maxpool}}}"


__all__ = [
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
