"""Core mapping: tile a spiking network into core-sized blocks and place them onto a chip's cores (docs/mapping.md)."""
