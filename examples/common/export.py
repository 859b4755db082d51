"""ONNX (and safetensors) export shared by the example training scripts."""

from __future__ import annotations

import os
from collections import Counter

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


def make_single_file(path: str | os.PathLike) -> None:
    """Re-save ``path`` with all tensors inline (in case an exporter used external data)."""
    import onnx

    m = onnx.load(str(path))  # pulls in external data if any
    onnx.save_model(m, str(path), save_as_external_data=False)
    check_single_file(path)


def export_dynamo(model: torch.nn.Module, example: torch.Tensor, path: str, *, static_fallback: bool = True) -> str:
    """Export ``model`` with torch's torch.export-based (dynamo) exporter, input ``x`` and output
    ``logits`` with a dynamic batch dimension, as one self-contained file (external data, if
    any, is inlined and the ``.data`` file removed).

    If the dynamic export raises and ``static_fallback`` is set, export again with a static
    batch instead of raising. Returns a note on the batch dimension: ``"dynamic batch"`` or
    ``"static batch (dynamic export failed)"``."""
    note = "dynamic batch"
    try:
        prog = torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=True,
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            external_data=False,
        )
    except Exception as e:  # pragma: no cover - fallback path
        if not static_fallback:
            raise
        print(f"dynamo export with dynamic batch failed ({type(e).__name__}: {e}); exporting static", flush=True)
        note = "static batch (dynamic export failed)"
        prog = torch.onnx.export(
            model, (example,), path, dynamo=True, input_names=["x"], output_names=["logits"], external_data=False
        )
    del prog
    if os.path.exists(path + ".data"):
        make_single_file(path)
        os.remove(path + ".data")
    check_single_file(path)
    return note


def save_safetensors(model: torch.nn.Module, path: str, metadata: dict[str, str]) -> int:
    """Write ``model``'s state_dict (contiguous, detached) to ``path`` with ``metadata``, readable
    by everyone (safetensors creates the file 0600); returns the file size in bytes."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, path, metadata=metadata)
    os.chmod(path, 0o644)
    return os.path.getsize(path)


def op_counts(path: str) -> dict[str, int]:
    """``{op_type: count}`` of the ONNX file at ``path``, sorted by op type; the nodes of local
    functions (none expected) are counted as ``<function>/<op_type>`` so that nothing is hidden."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    c = Counter(n.op_type for n in m.graph.node)
    for f in m.functions:
        c.update(f"{f.name}/{n.op_type}" for n in f.node)
    return dict(sorted(c.items()))
