"""The ``spikingjelly`` backend: checks, lowers and runs SNN-stage graphs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from snnc.backend import Backend, SimResult, check_timesteps, default_batch_size, encode, keep_freed_memory, resolve_device, spike_rates
from snnc.errors import BackendError
from snnc.ir.executor import check_input, iter_batches
from snnc.ir.graph import Graph

SUPPORTED_VERSION = "2.0"
INSTALL_HINT = (
    "install it without its declared dependencies, which would replace torch: "
    "`pip install --no-deps spikingjelly==2.0.0 loguru tqdm h5py requests packaging scipy` "
    "(`make setup` does this)"
)


def require_spikingjelly() -> str:
    """SpikingJelly's version; a BackendError saying how to install it if it is missing
    or not a 2.0 release."""
    import logging

    # SpikingJelly registers Triton kernels at import; without Triton (CPU-only torch) torch
    # logs a warning per kernel. The CPU path needs no Triton: keep that quiet.
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    try:
        import importlib.metadata

        version = importlib.metadata.version("spikingjelly")
        import spikingjelly.activation_based.neuron  # noqa: F401  (fails on missing run-time dependencies)
    except importlib.metadata.PackageNotFoundError:
        raise BackendError(f"SpikingJelly is not installed; {INSTALL_HINT}") from None
    except ImportError as e:
        raise BackendError(f"SpikingJelly {version} cannot be imported ({e}); {INSTALL_HINT}") from e
    if not version.startswith(SUPPORTED_VERSION):
        raise BackendError(f"SpikingJelly {version} is installed, but this backend needs {SUPPORTED_VERSION}.x; {INSTALL_HINT}")
    return version


class SpikingJellyBackend(Backend):
    """SpikingJelly 2.0 multi-step network: fused CUDA/Triton IF kernels on a GPU."""

    name = "spikingjelly"

    def __init__(self, device: str | None = "auto"):
        self.version = require_spikingjelly()
        from snnc_spikingjelly.network import TABLE

        self.table = TABLE
        self.device = resolve_device(device, "auto")
        self.description = f"SpikingJelly {self.version} multi-step network on {self.device} (its CUDA/Triton neuron kernels on a GPU)"

    def lower(self, graph: Graph):
        """The :class:`~snnc_spikingjelly.network.SpikingJellyNetwork` for ``graph`` (on this
        backend's device, in eval mode)."""
        from snnc.ir.verify import verify
        from snnc_spikingjelly.network import SpikingJellyNetwork

        verify(graph, "snn")
        self.check(graph)
        return SpikingJellyNetwork(graph).to(self.device).eval()

    def run(self, graph, x, timesteps: Sequence[int], *, batch_size=None, encoding="direct", seed=0, progress=None) -> SimResult:
        steps = check_timesteps(timesteps)
        check_input(graph, x)
        net = self.lower(graph)
        T = steps[-1]
        cpu = torch.device(self.device).type == "cpu"
        if batch_size is None:
            batch_size = default_batch_size(T, graph, "cpu" if cpu else "cuda")
        if cpu:
            keep_freed_memory()  # [T, B, ...] buffers recycled by malloc, as in the reference
        neurons = net.neurons()
        for m in neurons.values():
            m.count_spikes, m.spike_count = True, 0.0
        gen = torch.Generator(device=self.device).manual_seed(seed)
        outs: dict[int, list[list[np.ndarray]]] = {t: [[] for _ in graph.outputs] for t in steps}
        task = progress(f"spikingjelly T={T}", len(x)) if progress else None
        with torch.inference_mode():
            for xb in iter_batches(x, batch_size):
                inp = encode(xb.to(self.device), T, encoding, gen)
                seqs = net.sequence(inp.data, T if inp.static else None)
                for t in steps:
                    for acc, y in zip(outs[t], seqs):
                        acc.append(y[t - 1].cpu().numpy())
                if task:
                    task.advance(len(xb))
        counts = {name: m.spike_count for name, m in neurons.items()}
        for m in neurons.values():
            m.count_spikes = False
        return SimResult({t: [np.concatenate(a, 0) for a in outs[t]] for t in steps}, spike_rates(graph, counts, len(x), T), len(x))
