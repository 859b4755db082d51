"""snnc backends for Lava (lava-nc 0.10): ``lava`` runs the converted network as Lava
processes in floating point, ``lava-fixed`` in Loihi fixed point (8-bit weights with a
per-layer exponent, 24-bit state, binary spikes), on Lava's CPU simulator.

Lava is imported lazily, so ``snnc backends`` can say clearly when it is missing.
"""

from snnc_lava.backend import LavaBackend, LavaFixedBackend, require_lava

__all__ = ["LavaBackend", "LavaFixedBackend", "require_lava"]
