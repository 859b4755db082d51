"""Defaults shared by the API, the CLI and the passes, written once (a module without heavy imports)."""

DEFAULT_TIMESTEPS = 32
DEFAULT_THRESHOLD_METHOD = "percentile"
DEFAULT_PERCENTILE = 98.0
DEFAULT_THRESHOLD = f"{DEFAULT_THRESHOLD_METHOD}:{DEFAULT_PERCENTILE:g}"  # the CLI / API spelling
DEFAULT_GRANULARITY = "channel"
DEFAULT_MAXPOOL = "gate"
DEFAULT_NEURON = "if"  # snnc convert --neuron: the plain IF neuron (variants: signed, burst:K, signed-burst:K)
DEFAULT_BURST_SPIKES = 4  # burst:K without K
DEFAULT_MESSAGE_BITS = 8  # attention networks: the signed payload of every graded spike (snnc convert --message-bits)
DEFAULT_BATCH_SIZE = 128  # samples per batch of the ANN statistics passes
DEFAULT_SEED = 0
DEFAULT_CALIB_SAMPLES = 1024
# The best calibration level that fits the time budget (advanced: under 5 minutes on 1024
# samples on 2 CPU cores for the benchmark models; see benchmarks/accuracy).
DEFAULT_CALIBRATION = "advanced"
DEFAULT_EVAL_TIMESTEPS = (8, 16, 32)  # snnc eval / snnc.evaluate
DEFAULT_REPORT_TIMESTEPS = (4, 8, 16, 32, 64)  # snnc report: accuracy vs T
DEFAULT_ABLATION_SAMPLES = 256  # snnc report: samples of the per-layer ablations
DEFAULT_NIR_DT = 1e-4  # NIR export step length (SpikingJelly's import_from_nir default; most NIR tools use it too)
STORE_CHOICES = ("auto", "memory", "disk", "recompute")  # where calibration keeps spike trains between layers
DEFAULT_STORE_MEMORY = 1 << 30  # bytes of spike trains the calibration keeps in memory before spilling to disk
# snnc finetune / snnc.finetune (surrogate-gradient training of a converted SNN)
DEFAULT_FINETUNE_EPOCHS = 3
DEFAULT_FINETUNE_LR = 1e-4
DEFAULT_FINETUNE_BATCH = 64
DEFAULT_FINETUNE_VAL_FRACTION = 0.1
DEFAULT_FINETUNE_PATIENCE = 2
