"""ONNX export shared by the example training scripts."""

from __future__ import annotations

import os

import torch


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike) -> None:
    """Export ``model`` with torch's legacy (TorchScript) exporter, opset 17, input ``x`` and
    output ``logits`` with a dynamic batch dimension, as one self-contained file; then run
    onnx's full checker on it."""
    import onnx

    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    check_single_file(path)
    onnx.checker.check_model(str(path), full_check=True)


def check_single_file(path: str | os.PathLike) -> None:
    """Raise if the ONNX file at ``path`` keeps tensors in external data files."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RuntimeError(f"{path} references external data for {external[:5]}...")
