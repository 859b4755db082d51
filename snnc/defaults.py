"""Defaults shared by the API and the CLI (a module without heavy imports)."""

DEFAULT_CALIB_SAMPLES = 1024
# The best calibration level that fits the time budget (advanced: under 5 minutes on 1024
# samples on 2 CPU cores for the benchmark models; see benchmarks/accuracy).
DEFAULT_CALIBRATION = "advanced"
