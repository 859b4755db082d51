"""The translators: walk a traced graph in order and dispatch each node to its converter.

:class:`FxTranslator` translates a ``torch.fx`` symbolic trace (``call_module`` /
``call_function`` / ``call_method``); :class:`ExportTranslator` a functionalised
``torch.export`` program (ATen ``call_function`` nodes). Both fold calls whose arguments
are all constants, and rebind the mutated node after an in-place op.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import fx, nn

from snnc.frontends.common import constant_output, too_many_inputs
from snnc.frontends.torch_fx.aten import ATEN_CONVERTERS
from snnc.frontends.torch_fx.context import BATCH, BatchConstant, Context, Permuted, describe
from snnc.frontends.torch_fx.converters import (
    FOLDABLE_FUNCTIONS,
    FOLDABLE_METHODS,
    FUNCTION_CONVERTERS,
    INPLACE_FUNCTIONS,
    METHOD_CONVERTERS,
    MODULE_CONVERTERS,
    WHOLE_MODULES,
    Converter,
    unsupported_hint,
)
from snnc.ir.graph import Graph, Shape, Value

_SIGNATURES: dict[Converter, inspect.Signature] = {}
_WHOLE_NAMES = frozenset(f"{c.__module__}.{c.__qualname__}" for c in WHOLE_MODULES)


def _bind(cx: Context, converter: Converter, args: Sequence[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """Bind traced arguments to a converter whose signature mirrors the torch one."""
    sig = _SIGNATURES.get(converter)
    if sig is None:
        sig = _SIGNATURES[converter] = inspect.signature(converter)
    try:
        return sig.bind(cx, *args, **kwargs)
    except TypeError as e:
        cx.unsupported(f"arguments not supported ({e})")


def leaves(obj: Any) -> Iterator[Any]:
    """The leaves of nested tuples, lists, dicts and slices."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from leaves(item)
    elif isinstance(obj, slice):
        yield from (obj.start, obj.stop, obj.step)
    else:
        yield obj


def _depends_on_input(args: Any) -> bool:
    return any(isinstance(a, (Value, Permuted, BatchConstant)) or a is BATCH for a in leaves(args))


def _feeds_output_only(node: fx.Node) -> bool:
    return bool(node.users) and all(user.op == "output" for user in node.users)


def _callable_name(fn: Any) -> str:
    """A readable name for a call_function target: torch.sigmoid, F.gelu, operator.add, aten.x.y."""
    if isinstance(fn, torch._ops.OpOverload):
        return str(fn)
    name = getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or ""
    if module in ("torch.nn.functional", "torch._C._nn"):
        return f"F.{name}"
    if module.startswith("torch") or module in ("", "torch._C._VariableFunctions"):
        return f"torch.{name}" if getattr(torch, name, None) is fn else f"{module or 'torch'}.{name}"
    if module == "_operator":
        return f"operator.{name}"
    return f"{module}.{name}" if module != "builtins" else name


def _module_type_name(cls: type) -> str:
    if cls.__module__.startswith("torch.nn.modules"):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


class Translator:
    """Walks a traced graph in order, dispatching each node to its converter.

    Subclasses say how placeholders, constants, targets, names and outputs are found in
    their kind of traced program (symbolic fx trace or exported ATen program).
    """

    def __init__(self, graph: Graph, fx_graph: fx.Graph, input_shape: Shape):
        self.cx = Context(graph)
        self.fx_graph = fx_graph
        self.input_shape = input_shape
        self.env: dict[fx.Node, Any] = {}

    # -- hooks
    def placeholder(self, node: fx.Node) -> Any:
        raise NotImplementedError

    def get_attr(self, node: fx.Node) -> Any:
        raise NotImplementedError

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        """The converter and the arguments it takes before the traced ones (the module)."""
        raise NotImplementedError

    def foldable(self, node: fx.Node) -> bool:
        raise NotImplementedError

    def mutates_first_arg(self, node: fx.Node, bound: inspect.BoundArguments, prefix: tuple[Any, ...]) -> bool:
        return False

    def ir_name(self, node: fx.Node) -> str:
        return node.name

    def output_structure(self, node: fx.Node) -> Any:
        return node.args[0]

    def op_type(self, node: fx.Node) -> str:
        if node.op == "call_function":
            return f"call_function {_callable_name(node.target)}"
        if node.op == "call_method":
            return f"call_method Tensor.{node.target}"
        return node.op

    # -- driver
    def run(self) -> None:
        for node in self.fx_graph.nodes:
            self.cx.at(self.op_type(node), self.ir_name(node), _feeds_output_only(node))
            if node.op == "placeholder":
                self.env[node] = self.placeholder(node)
            elif node.op == "get_attr":
                self.env[node] = self.get_attr(node)
            elif node.op == "output":
                self.set_outputs(fx.node.map_arg(self.output_structure(node), self.env.__getitem__))
            else:
                self.env[node] = self.call(node)

    def call(self, node: fx.Node) -> Any:
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        if not _depends_on_input((args, kwargs)) and self.foldable(node):
            return self.fold(node, args, kwargs)
        converter, prefix = self.lookup(node)
        bound = _bind(self.cx, converter, (*prefix, *args), kwargs)
        result = converter(*bound.args, **bound.kwargs)
        if self.mutates_first_arg(node, bound, prefix):
            self.rebind(node, result)
        return result

    def fold(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

    def rebind(self, node: fx.Node, result: Any) -> None:
        """After an in-place op, readers of the mutated tensor must see the result."""
        target = node.args[0] if node.args else node.kwargs.get("input")
        if isinstance(target, fx.Node) and isinstance(self.env.get(target), Value) and isinstance(result, Value):
            self.env[target] = result

    def input_names(self) -> list[str]:
        """The placeholders that are tensor inputs of the model."""
        raise NotImplementedError

    def add_input(self, node: fx.Node) -> Value:
        graph = self.cx.graph
        if graph.inputs:
            raise too_many_inputs("torch", self.input_names())
        return graph.add_input(node.name, self.input_shape)

    def set_outputs(self, structure: Any) -> None:
        outputs: list[Value] = []
        for index, value in enumerate(leaves(structure)):
            if isinstance(value, Permuted):
                self.cx.at("output", f"output {index}", False)
                self.cx.tensor(value, f"model output {index}")
            if not isinstance(value, Value):
                raise constant_output(f"{index} ({describe(value)})")
            # Graph outputs are distinct node outputs: a returned input, or a tensor returned
            # twice, gets an identity node so the outputs line up with the model's.
            if value.producer is None or any(value is o for o in outputs):
                self.cx.at("output", f"{value.name}_out", False)
                value = self.cx.emit("identity", [value])
            outputs.append(value)
        self.cx.graph.set_outputs(outputs)


class FxTranslator(Translator):
    """Translates a ``torch.fx`` symbolic trace (call_module / call_function / call_method)."""

    def __init__(self, graph: Graph, gm: fx.GraphModule, input_shape: Shape):
        super().__init__(graph, gm.graph, input_shape)
        self.root = gm
        self.modules = dict(gm.named_modules())

    def placeholder(self, node: fx.Node) -> Any:
        # The first argument is the model input; later ones with defaults keep them.
        if node.args and self.cx.graph.inputs:
            return node.args[0]
        return self.add_input(node)

    def input_names(self) -> list[str]:
        placeholders = [n for n in self.fx_graph.nodes if n.op == "placeholder"]
        return [n.name for i, n in enumerate(placeholders) if i == 0 or not n.args]

    def get_attr(self, node: fx.Node) -> Any:
        return _fetch_attr(self.root, str(node.target))

    def op_type(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"call_module {_module_type_name(type(self.modules[str(node.target)]))}"
        return super().op_type(node)

    def ir_name(self, node: fx.Node) -> str:
        # Modules keep their qualified names ("features.0"), which users recognise.
        return str(node.target) if node.op == "call_module" else node.name

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            converter = MODULE_CONVERTERS.get(type(module))
            prefix: tuple[Any, ...] = (module,)
        elif node.op == "call_method":
            converter, prefix = METHOD_CONVERTERS.get(str(node.target)), ()
        else:
            converter, prefix = FUNCTION_CONVERTERS.get(node.target), ()
        if converter is None:
            self.cx.unsupported(unsupported_hint(self.cx.op_type))
        return converter, prefix

    def foldable(self, node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in FOLDABLE_METHODS
        return node.op == "call_function" and node.target in FOLDABLE_FUNCTIONS

    def mutates_first_arg(self, node: fx.Node, bound: inspect.BoundArguments, prefix: tuple[Any, ...]) -> bool:
        if node.op == "call_method":
            name = str(node.target)
            return name.endswith("_") and not name.startswith("_")
        if node.op == "call_module":
            return bool(getattr(prefix[0], "inplace", False))
        return node.target in INPLACE_FUNCTIONS or bound.arguments.get("inplace") is True


class ExportTranslator(Translator):
    """Translates a functionalised ``torch.export`` program (ATen call_function nodes)."""

    def __init__(self, graph: Graph, program: Any, input_shape: Shape, whole_modules: dict[str, nn.Module] | None = None):
        super().__init__(graph, program.graph_module.graph, input_shape)
        self.program = program
        self.root = program.graph_module
        self.input_specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
        self.nodes = {n.name: n for n in self.fx_graph.nodes}
        # Calls of layers converted as a whole (attention): the first node of each call's
        # region -> (module, qualified name, preserved call signature); the region's nodes
        # are skipped.
        self.whole_calls: dict[fx.Node, tuple[nn.Module, str, Any]] = {}
        self.skipped: set[fx.Node] = set()
        self._find_whole_calls(whole_modules or {})

    def _find_whole_calls(self, modules: dict[str, nn.Module]) -> None:
        for entry in getattr(self.program, "module_call_graph", ()):
            base, _, call = entry.fqn.partition("@")
            if base not in modules or entry.signature is None:
                continue
            region = [n for n in self.fx_graph.nodes if n.op == "call_function" and self._in_call(n, base, call)]
            if region:
                self.whole_calls[region[0]] = (modules[base], base, entry.signature)
                self.skipped.update(region)

    @staticmethod
    def _in_call(node: fx.Node, fqn: str, call: str) -> bool:
        """Whether ``node`` runs inside call number ``call`` ("" for the first) of module ``fqn``."""
        for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
            if path == fqn and (key.endswith(f"@{call}") if call else "@" not in key):
                return True
        return False

    def call(self, node: fx.Node) -> Any:
        if node not in self.skipped:
            self._refuse_inside_whole_module(node)
        if node in self.whole_calls:
            self.call_whole(node, *self.whole_calls[node])
        if node in self.skipped:
            if node.target is torch.ops.aten.sym_size.int:  # shape queries may be shared
                return super().call(node)
            return self.env.get(node)
        return super().call(node)

    def _refuse_inside_whole_module(self, node: fx.Node) -> None:
        """An ATen op of a layer meant to be converted as a whole whose call signature
        torch.export could not preserve: its internals (a sequence-first layout, heads merged
        with the batch) have no batch-first IR form, so say why instead of failing on them."""
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
            if name in _WHOLE_NAMES:
                self.cx.at(f"call_module nn.{name.rsplit('.', 1)[-1]}", str(path), False)
                self.cx.unsupported(
                    "torch.fx could not trace the model, and torch.export could not preserve this layer's call signature, "
                    "so it cannot be converted as a whole. torch requires every call of a layer to pass the same arguments "
                    "(keyword arguments included) and the caller to use every output it asks for (pass need_weights=False "
                    "when the attention weights are not used); or make the model traceable by torch.fx (no Python control "
                    "flow on tensor values or shapes)"
                )

    def call_whole(self, first: fx.Node, module: nn.Module, fqn: str, signature: Any) -> None:
        """Translate one call of a layer converted as a whole with its module converter; its
        outputs are bound to the nodes the preserved signature names."""
        from torch.export.graph_signature import ConstantArgument
        from torch.utils import _pytree

        self.cx.at(f"call_module {_module_type_name(type(module))}", fqn, False)

        def value_of(spec: Any) -> Any:
            if isinstance(spec, ConstantArgument):
                return spec.value
            return self.env[self.nodes[spec.name]]

        args, kwargs = _pytree.tree_unflatten([value_of(a) for a in signature.inputs], signature.in_spec)
        converter = MODULE_CONVERTERS[type(module)]
        bound = _bind(self.cx, converter, (module, *args), kwargs)
        results = list(leaves(converter(*bound.args, **bound.kwargs)))
        if len(results) != len(signature.outputs):
            self.cx.unsupported(f"the layer returns {len(signature.outputs)} values; its conversion gave {len(results)}")
        for spec, value in zip(signature.outputs, results):
            if not isinstance(spec, ConstantArgument):
                self.env[self.nodes[spec.name]] = value

    def placeholder(self, node: fx.Node) -> Any:
        from torch.export.graph_signature import InputKind

        spec = self.input_specs[node.name]
        if spec.kind == InputKind.USER_INPUT:
            return self.add_input(node)
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            # Non-persistent buffers and lifted constants live in .constants, not .state_dict.
            tensor = self.program.state_dict.get(spec.target)
            if tensor is None:
                tensor = self.program.constants[spec.target]
            return tensor.detach()
        self.cx.unsupported(f"exported programs with {spec.kind.name} inputs are not supported")

    def input_names(self) -> list[str]:
        from torch.export.graph_signature import InputKind

        return [name for name, spec in self.input_specs.items() if spec.kind == InputKind.USER_INPUT]

    def get_attr(self, node: fx.Node) -> Any:
        return _fetch_attr(self.root, str(node.target))

    def ir_name(self, node: fx.Node) -> str:
        # Name ops inside a torch.nn layer after the layer ("features.0"), like the fx path.
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            fqn, cls = list(stack.values())[-1]
            module = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
            if fqn and module.startswith("torch.nn.modules."):
                return str(fqn)
        return node.name

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        converter = ATEN_CONVERTERS.get(node.target) if node.op == "call_function" else None
        if converter is None:
            self.cx.unsupported(unsupported_hint(self.cx.op_type))
        return converter, ()

    def foldable(self, node: fx.Node) -> bool:
        target = node.target
        if target is operator.getitem:
            return True
        return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded not in target.tags

    def output_structure(self, node: fx.Node) -> Any:
        # Mutated buffers and inputs are outputs of a functional program too; keep only
        # what forward() returns.
        from torch.export.graph_signature import OutputKind

        specs = self.program.graph_signature.output_specs
        return [value for value, spec in zip(node.args[0], specs) if spec.kind == OutputKind.USER_OUTPUT]
