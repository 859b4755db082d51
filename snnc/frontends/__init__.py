"""Frontends: import trained ANNs (ONNX files, torch modules) into the snnc IR."""
