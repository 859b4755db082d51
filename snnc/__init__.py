"""snnc: convert trained ANNs into spiking neural networks, simulate and deploy them."""

__version__ = "0.1.0"
