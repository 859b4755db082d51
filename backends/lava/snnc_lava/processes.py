"""snnc's Lava processes and their process models (``floating_pt`` and ``fixed_pt``).

One Lava process per node of the lowered graph: ``SnncNode<k>`` (``k`` in-ports ``in0`` ...,
one out-port ``out``) for synapse-side ops and spiking neurons, ``SnncReadout`` for the
non-spiking output layer. What a process computes is a *kernel* (:mod:`snnc_lava.kernels`)
built in the process model from the plain data in the process's ``spec`` parameter; the
two process models differ only in the tag Lava selects them by (the spec says which
arithmetic to use, and the backend compiles a float or a fixed spec to match).

Every port carries a batch of samples: the first axis of every port shape is the batch.
Each sample's dynamics are exactly the per-sample equations (nothing mixes samples), so a
batch of B samples costs one Lava run instead of B. Timing within a run: process models
count Lava time steps; step ``t`` of sample batch ``b`` is Lava step ``b * T + t``, and every
stateful kernel resets itself at the first step of a batch.

A synapse process receives its inputs and sends its output in the same time step (recv,
then send); the graph is acyclic, so this cannot deadlock, and the spiking network has
exactly the reference simulator's timing (no synaptic delay).
"""

from __future__ import annotations

import time

import numpy as np

from snnc_lava import compat

compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from snnc_lava.lower import MAX_INPUTS  # noqa: E402


class _SnncModelMixin:
    """Shared run_spk: receive every in-port, step the kernel, send."""

    n_inputs = 0

    def _kernel(self):
        k = getattr(self, "_k", None)
        if k is None:
            from snnc_lava.kernels import build_kernel

            self._k = k = build_kernel(self.proc_params["spec"])
        return k

    def run_spk(self):
        try:
            self._step()
        except Exception:
            # Lava reports a failed model and then waits forever: leave the traceback where
            # the backend, which polls for it, raises it and tears the runtime down.
            import traceback

            with open(self.proc_params["spec"]["error_file"], "a") as f:
                f.write(f"process {self.proc_params['spec'].get('name', '?')}:\n{traceback.format_exc()}\n")
            raise

    def _step(self):
        k = self._kernel()
        ins = [getattr(self, f"in{i}").recv() for i in range(self.n_inputs)]
        t0 = time.perf_counter()
        t = (self.time_step - 1) % k.T  # 0-based step within the sample batch
        if t == 0:
            k.reset((self.time_step - 1) // k.T)
        y = k.step(ins)
        self.busy[0] += time.perf_counter() - t0  # compute time, without Lava's messaging
        if hasattr(self, "out"):
            self.out.send(y)
        if k.counts_spikes:
            self.spikes[0] = k.spike_total
        if hasattr(self, "value"):
            self.value[:] = k.value()


def _make(k: int):
    """The process class with ``k`` in-ports and its float / fixed process models."""

    def __init__(self, *, in_shapes, out_shape, spec, name=None):
        AbstractProcess.__init__(self, spec=spec, name=name)
        for i, shape in enumerate(in_shapes):
            setattr(self, f"in{i}", InPort(shape=tuple(shape)))
        self.out = OutPort(shape=tuple(out_shape))
        self.spikes = Var(shape=(1,), init=0)
        self.busy = Var(shape=(1,), init=0)

    proc = type(f"SnncNode{k}", (AbstractProcess,), {"__init__": __init__, "__doc__": f"snnc node with {k} input port(s).", "__module__": __name__})
    models = []
    for label, dtype in (("floating_pt", np.float32), ("fixed_pt", np.int64)):
        attrs = {f"in{i}": LavaPyType(PyInPort.VEC_DENSE, dtype) for i in range(k)}
        attrs["out"] = LavaPyType(PyOutPort.VEC_DENSE, dtype)
        attrs["spikes"] = LavaPyType(np.ndarray, np.float64)
        attrs["busy"] = LavaPyType(np.ndarray, np.float64)
        attrs["n_inputs"] = k
        attrs["__module__"] = __name__  # Lava looks for models in the process's module
        attrs["__annotations__"] = {**{f"in{i}": PyInPort for i in range(k)}, "out": PyOutPort, "spikes": np.ndarray, "busy": np.ndarray}
        model = type(f"PySnncNode{k}{'Float' if label == 'floating_pt' else 'Fixed'}", (_SnncModelMixin, PyLoihiProcessModel), attrs)
        model = tag(label)(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model)))
        models.append(model)
    return proc, models


class SnncReadout(AbstractProcess):
    """Non-spiking output layer: integrates its input; ``value`` holds the integral."""

    def __init__(self, *, in_shape, spec, name=None):
        super().__init__(spec=spec, name=name)
        self.in0 = InPort(shape=tuple(in_shape))
        self.value = Var(shape=tuple(in_shape), init=0)
        self.spikes = Var(shape=(1,), init=0)
        self.busy = Var(shape=(1,), init=0)


def _readout_model(label: str, dtype):
    attrs = {
        "in0": LavaPyType(PyInPort.VEC_DENSE, dtype),
        "value": LavaPyType(np.ndarray, np.float64),
        "spikes": LavaPyType(np.ndarray, np.float64),
        "busy": LavaPyType(np.ndarray, np.float64),
        "n_inputs": 1,
        "__module__": __name__,
        "__annotations__": {"in0": PyInPort, "value": np.ndarray, "spikes": np.ndarray, "busy": np.ndarray},
    }
    model = type(f"PySnncReadout{'Float' if label == 'floating_pt' else 'Fixed'}", (_SnncModelMixin, PyLoihiProcessModel), attrs)
    return tag(label)(requires(CPU)(implements(proc=SnncReadout, protocol=LoihiProtocol)(model)))


NODE_PROCESSES = {}
for _k in range(MAX_INPUTS + 1):
    _proc, (_float, _fixed) = _make(_k)
    globals()[_proc.__name__] = _proc
    globals()[_float.__name__] = _float
    globals()[_fixed.__name__] = _fixed
    NODE_PROCESSES[_k] = _proc
PySnncReadoutFloat = _readout_model("floating_pt", np.float32)
PySnncReadoutFixed = _readout_model("fixed_pt", np.int64)
