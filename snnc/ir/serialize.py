"""Graph <-> JSON + arrays, and the ``.snn`` artifact container.

A ``.snn`` file is a zip archive holding

* ``manifest.json``: ``{"format": "snnc-artifact", "format_version": 1, "snnc_version",
  "graphs": {name: graph-json}, "provenance": {...}}``;
* ``weights.npz``: every parameter as ``<graph>/<node>/<param>`` (numpy, no pickle).

Loading never unpickles anything (``allow_pickle=False``) and checks the version.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import ArtifactError
from snnc.ir.graph import Graph
from snnc.ir.verify import verify
from snnc.utils.io import atomic_write, json_default

FORMAT = "snnc-artifact"
FORMAT_VERSION = 1


def graph_to_json(graph: Graph, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    nodes = []
    for n in graph.nodes:
        params = {}
        for key, arr in n.params.items():
            ref = f"{prefix}/{n.name}/{key}"
            arrays[ref] = arr
            params[key] = ref
        nodes.append(
            {
                "name": n.name,
                "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "attrs": n.attrs,
                "params": params,
                "shape": list(n.output.shape) if n.output.shape is not None else None,
            }
        )
    return {
        "name": graph.name,
        "stage": graph.stage,
        "inputs": [{"name": v.name, "shape": list(v.shape)} for v in graph.inputs],
        "outputs": [v.name for v in graph.outputs],
        "nodes": nodes,
        "meta": graph.meta,
    }


def graph_from_json(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Graph:
    try:
        g = Graph(doc["name"], doc["stage"])
        g.meta = dict(doc.get("meta", {}))
        env = {}
        for inp in doc["inputs"]:
            env[inp["name"]] = g.add_input(inp["name"], inp["shape"])
        for nd in doc["nodes"]:
            params = {k: arrays[ref] for k, ref in nd["params"].items()}
            node = g.add_node(nd["op"], [env[i] for i in nd["inputs"]], nd["attrs"], params, nd["name"], shape=nd["shape"])
            if node.name != nd["name"]:
                raise ArtifactError(f"duplicate node name {nd['name']!r}")
            env[node.name] = node.output
        g.set_outputs(env[o] for o in doc["outputs"])
    except KeyError as e:
        raise ArtifactError(f"graph description is missing or references {e}") from None
    verify(g)
    return g


def save_artifact(path: str | os.PathLike, graphs: dict[str, Graph], provenance: dict[str, Any]) -> None:
    """Write graphs + provenance atomically to ``path``."""
    from snnc import __version__

    arrays: dict[str, np.ndarray] = {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "snnc_version": __version__,
        "graphs": {name: graph_to_json(g, name, arrays) for name, g in graphs.items()},
        "provenance": provenance,
    }
    wbuf = io.BytesIO()
    np.savez(wbuf, **arrays)
    with atomic_write(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest, indent=1, default=json_default))
            zf.writestr("weights.npz", wbuf.getvalue())


def load_artifact(path: str | os.PathLike) -> tuple[dict[str, Graph], dict[str, Any]]:
    """Read a ``.snn`` file; returns ``(graphs, manifest)``."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"artifact {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            with np.load(io.BytesIO(zf.read("weights.npz")), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ArtifactError(f"{str(path)!r} is not a snnc artifact ({e}); create one with `snnc convert`") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{str(path)!r} is not a snnc artifact (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{str(path)!r} uses artifact format version {version}; this snnc reads version {FORMAT_VERSION}. "
            "Re-run `snnc convert` with this snnc, or install the snnc version that wrote it "
            f"({manifest.get('snnc_version')})."
        )
    graphs = {name: graph_from_json(doc, arrays) for name, doc in manifest["graphs"].items()}
    return graphs, manifest


