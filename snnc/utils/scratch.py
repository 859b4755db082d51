"""Temporary files that libraries would leave behind, kept inside snnc's own.

torch (2.13) creates its inductor cache directory, ``$TMPDIR/torchinductor_$USER``, the
first time anything imports ``torch._dynamo``, and ordinary ops do: ``torch.clamp`` on a
meta tensor (snnc's shape inference) runs a decomposition that imports it. snnc compiles
nothing, so that directory would be left outside every path the user named.
:func:`private_torch_cache` points torch's cache at a temporary directory of this process,
removed when it exits. Standard library only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile


def private_torch_cache() -> str | None:
    """Give torch a cache directory of this process's own (removed at exit), unless the
    user chose one (``TORCHINDUCTOR_CACHE_DIR``) or torch has made its own already.
    Returns the directory, or None when nothing was changed."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") or "torch._dynamo" in sys.modules:
        return None
    path = tempfile.mkdtemp(prefix="snnc-torch-cache-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    atexit.register(shutil.rmtree, path, True)
    return path
