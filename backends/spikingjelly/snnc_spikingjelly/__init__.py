"""snnc backend for SpikingJelly 2.0: lowers an SNN-stage graph to a multi-step
SpikingJelly network and runs it (SpikingJelly's CUDA/Triton neuron kernels on a GPU,
its CPU operators elsewhere).

Registered under the ``snnc.backends`` entry point as ``spikingjelly``; the core never
imports this package. SpikingJelly itself is imported lazily, so ``snnc backends`` can
say clearly when it is missing.
"""

from snnc_spikingjelly.backend import SpikingJellyBackend, require_spikingjelly

__all__ = ["SpikingJellyBackend", "require_spikingjelly"]
