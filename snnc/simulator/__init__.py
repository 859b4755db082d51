"""The reference simulator (torch, CPU and CUDA): snnc's semantic ground truth."""

from snnc.simulator.reference import ReferenceSimulator, SimResult, default_batch_size, simulate

__all__ = ["ReferenceSimulator", "SimResult", "default_batch_size", "simulate"]
