"""Helpers shared by the example workloads.

The examples are programs (``python -m examples.<name>.evaluate``): like the CLI, they give
torch's inductor cache a temporary directory of their own, removed at exit, instead of
leaving ``$TMPDIR/torchinductor_$USER`` behind (snnc/utils/scratch.py).
"""

from snnc.utils.scratch import private_torch_cache

private_torch_cache()
