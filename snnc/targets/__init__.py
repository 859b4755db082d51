"""Chip target descriptions shipped with snnc: one TOML file per target (``loihi2.toml``, ...).

Package data only; :mod:`snnc.mapping.targets` reads and checks them (schema: docs/targets.md).
"""
