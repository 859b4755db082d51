"""Exporters: write a converted SNN in an exchange format other tools read.

* :mod:`snnc.export.nir` — the Neuromorphic Intermediate Representation (NIR): the
  ``soft`` variant keeps the reference simulator's subtract-reset neurons exactly, the
  ``hard`` variant uses NIR's reset-to-zero ``IF`` neuron (importable by SpikingJelly).
"""

from snnc.export.nir import EXPORT_FORMATS, ExportSummary, NirRun, export_nir, hard_reset_reference, read_nir, reference_spike_trains, run_nir, to_nir

__all__ = ["EXPORT_FORMATS", "ExportSummary", "NirRun", "export_nir", "hard_reset_reference", "read_nir", "reference_spike_trains", "run_nir", "to_nir"]
