"""canonicalize: remove what does not compute, strip output post-processing, fold constants.

Algebra: identity and inference dropout are ``y = x``; softmax and argmax at a graph output
do not change the argmax (argmax is the argmax) and are not part of the network a spiking
target runs, so the output becomes the logits; ``affine(affine(x))`` with constants is one
affine (``s2 * (s1 x + c1) + c2 = (s2 s1) x + (s2 c1 + c2)``); ``reshape(reshape(x))`` is one
reshape and a reshape to the input's own shape is ``x``.
"""

from __future__ import annotations

from snnc.ir.graph import Graph, Node
from snnc.passes.base import Pass, PassContext, register_pass


@register_pass
class Canonicalize(Pass):
    """After canonicalize: no identity, dropout, or softmax/argmax producing a graph output
    remains; no affine feeds a single-use affine; no reshape feeds a reshape; no node is dead."""

    name = "canonicalize"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for node in list(graph.nodes):
            if node.spec.has("structural"):
                graph.bypass(node)
                changed = True
        changed |= _strip_postprocessing(graph, ctx)
        changed |= _merge_affines(graph)
        changed |= _merge_reshapes(graph)
        changed |= graph.remove_dead_nodes() > 0
        return changed


def _strip_postprocessing(graph: Graph, ctx: PassContext) -> bool:
    changed = False
    progress = True
    while progress:
        progress = False
        for out in graph.outputs:
            node = out.producer
            if node is None or not node.spec.has("postproc"):
                continue
            src = node.inputs[0]
            graph.set_outputs(src if o is out else o for o in graph.outputs)
            ctx.notices.append(
                f"stripped output post-processing: {node.op} {node.name!r}; the output is now {src.name!r} "
                "(the spiking network's readout gives the same argmax)"
            )
            progress = changed = True
            break
    graph.remove_dead_nodes()
    return changed


def _single_use(node: Node, graph: Graph) -> bool:
    return len(node.output.uses) == 1 and all(o is not node.output for o in graph.outputs)


def _merge_affines(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op != "affine" or node.graph is None:
            continue
        first = node.inputs[0].producer
        if first is None or first.op != "affine" or not _single_use(first, graph):
            continue
        s1, c1 = first.params["scale"], first.params["shift"]
        s2, c2 = node.params["scale"], node.params["shift"]
        node.set_param("scale", s2 * s1)
        node.set_param("shift", s2 * c1 + c2)
        graph.set_input(node, 0, first.inputs[0])
        graph.remove_node(first)
        changed = True
    return changed


def _merge_reshapes(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op != "reshape" or node.graph is None:
            continue
        src = node.inputs[0]
        if tuple(node.attr("shape")) == src.shape:
            graph.bypass(node)
            changed = True
            continue
        first = src.producer
        if first is not None and first.op == "reshape":
            graph.set_input(node, 0, first.inputs[0])
            if not first.output.uses and all(o is not first.output for o in graph.outputs):
                graph.remove_node(first)
            changed = True
    return changed
