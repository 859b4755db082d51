"""SpikingJelly 2.0.0's transformer ann2snn recipes on the Fashion-MNIST ViT: accuracy and messages.

``run_sj_recipe(model, recipe, x, y, timesteps, calib)`` converts the trained timm-style ViT of
``examples/vit_fashion_mnist/model.py`` with one of SpikingJelly's transformer recipes, simulates
it for every T and returns the test accuracy together with a measurement of the messages the SNN
sends between layers.  Usage::

    python benchmarks/transformer/sj_recipes.py [--samples 1000] [--calib 1024] [--T 1,2,4,8,16,32]
        [--quantize-bits 2,3,4,6,8] [--quantize-T 1,4,8,32]

writes ``benchmarks/transformer/results/sj_recipes.json``.

Recipes (``spikingjelly.activation_based.ann2snn.recipes``)
-------------------------------------------------------------
``td_equivalent``
    ``TransformerTDEquivalentRecipe`` (FX graph).  Conv2d, Linear, LayerNorm, GELU, softmax and
    matmul become temporal-difference (TD) operators: each accumulates its inputs over the time
    steps, applies the ANN function to the running sums and emits the *difference* of the result
    to the previous step, a float that may be negative.  The image is presented once (step 0, then
    zeros, as in SpikingJelly's examples) and the outputs summed over T equal the ANN's logits at
    every T.
``sta_equivalent``
    ``STATransformerRecipe(mode="equivalent")``: the same TD operators for Conv2d, Linear,
    LayerNorm, GELU and ``nn.MultiheadAttention``; parameters used as tensors (class token,
    position embedding) become time constants that emit their value at step 0 and zeros after.
``sta_spiking_encoder``
    ``STATransformerRecipe(mode="spiking_encoder")``: as ``sta_equivalent``, plus an
    integrate-and-fire encoder after every LayerNorm, GELU and attention output.  Its threshold is
    a per-channel value calibrated on ``calib`` (MSE search around max|activation|, divided by T);
    each step it emits ``trunc(membrane / threshold)`` (a signed integer count) times the threshold
    and keeps the remainder.  Conv2d / Linear outputs stay float TD differences.  The recipe's
    default ``threshold_scale=1.0`` is used.
``spikezip``
    ``SpikeZIPTFQANNRecipe(model_family="vit")`` (module tree).  It converts an already quantised
    ANN (QANN: LSQ-style quantisers with ``s``/``sym``/``pos_max``/``neg_min`` after every layer,
    ReLU MLP, attention exposing ``quan_q``/``quan_k``/``quan_v``/``attn_quan``/``after_attn_quan``/
    ``quan_proj``) into ST-BIF neurons that send signed ternary spikes; it neither quantises nor
    fine-tunes (its docstring: "does not quantize or post-train an ANN").  The float ViT has no
    quantisers, so it is refused; the record says what quantisation-aware fine-tuning would need
    and an estimate of its cost measured on this machine.  The recipe itself does not refuse the
    float ViT: ``forced_conversion_of_float_vit`` shows what its conversion computes anyway
    (Linear/Conv2d/LayerNorm made TD, GELU and the attention core left as they are: equal to the
    ANN at T=1, where nothing is differenced, and not equivalent for T > 1).
``qwen2``
    ``Qwen2SNNRecipe``: Hugging Face Qwen2 causal LMs only (RMSNorm, SiLU-gated MLP, rotary
    causal attention, ``config.model_type == "qwen2"``); it refuses the ViT itself, and the
    record quotes its error.

Weight-preserving rewrites
--------------------------
The FX recipes trace the model and then run it in SpikingJelly's multi-step mode, where every
tensor op must leave the batch dimension in place.  The timm-style attention
(``qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)`` and ``qkv[0]``) moves/indexes the batch
dimension and is refused by both recipes, so the ViT is rewritten with the *same* weights:

* ``td_equivalent``: the fused ``qkv`` Linear is split into ``q``, ``k``, ``v`` Linears (row slices
  of the same weight and bias); attention is ``reshape(B, N, H, hd).transpose(1, 2)``,
  ``q @ k^T * scale``, ``softmax``, ``@ v`` (all supported TD ops).  The recipe has no time
  constants, so the class token and position embedding are folded into one constant
  ``token_bias = cat(cls, 0) + pos_embed`` that is fed as a second input at step 0 only (the
  patch-embedding Conv2d stays inside the SNN).
* ``sta_*``: STA has no TD matmul/softmax; it supports ``nn.MultiheadAttention``, so attention
  becomes ``nn.MultiheadAttention(batch_first=True)`` with ``in_proj_weight = qkv.weight`` and
  ``out_proj = proj`` (same head split, scale ``head_dim**-0.5``).  Class token and position
  embedding stay parameters (the recipe turns them into step-0 constants).

Each rewrite is checked against the original on the first 256 images (``rewrite_max_abs_diff``;
it must be below 1e-4; float32 round-off at most).

Messages
--------
With forward hooks on the converted model's SpikingJelly modules, per time step:

* a message is the output tensor of every stateful SpikingJelly module that the FX graph calls
  (TDConv2d, TDLinear, TDLayerNorm, TDGELU, TDSoftmax, SNNMatrixOperator, TDMultiheadAttention and
  the STA encoders), including the classifier head's output sent to the readout;
* inside ``TDMultiheadAttention`` the projections are called directly, not through ``__call__``,
  so their ``multi_step_forward`` is wrapped to count the q, k and v projections and the
  attention context (input of ``out_proj``) as messages too;
* a module whose only consumer is an STA encoder is the encoder's own input (its membrane
  current), so only the encoder's output counts;
* not counted: shape-only ops (reshape/transpose/cat/getitem), residual additions and the
  ``* scale`` of the scores (done where the messages arrive), time constants (class token /
  position embedding / ``token_bias``, a step-0 bias).  The network input (pixels at step 0) is
  reported separately as ``input`` and is not in the totals.

For each message tensor (all steps, all images) the value carried is the tensor itself, except
for STA encoders where it is the spike count ``output / threshold`` (the threshold is a known
per-channel constant).  Then

* ``bits``: 0 if it is always zero; if every value is an integer: ``ceil(log2(max + 1))`` when
  non-negative (binary spikes: 1) and ``ceil(log2(2 max + 1))`` when signed (ternary: 2); any
  non-integer value: 32 (float32);
* ``messages_per_neuron_per_step``: non-zero entries / (neurons * T * images), neurons being the
  tensor's size per image and step;
* ``max_abs``: the largest |value| carried.

Per T the totals are ``bits_per_message`` (max over messages), ``messages_per_neuron_per_step``
(all non-zeros / all neuron-steps), ``max_abs`` (max), and the same split into float and
integer messages (``by_kind``); ``layers`` holds every message.  ``accuracy`` is the argmax of the
outputs summed over T; ``max_abs_logit_diff_vs_ann`` compares that sum with the ANN's logits.

Quantised messages (``--quantize-bits``)
----------------------------------------
To put the recipes on a chip's axes (graded spikes with a small signed integer payload, at most
one message per neuron per step), each applicable recipe is run again with *every counted
message* (the tensors above, head output included, network input and time constants not)
quantised to a b-bit signed payload.  Per message tensor a scale ``s = max|m| / (2^(b-1) - 1)``
is measured in a first pass of the unquantised recipe at the same T over the calibration images
(``--calib``; the max is over all steps and images; for an STA encoder ``m`` is its emitted value
``count * threshold``).  Then every message ``m`` is replaced by ``s * clip(round(m / s),
-(2^(b-1)-1), 2^(b-1)-1)`` before it reaches the next layer: module outputs through the same
forward hooks (the encoder's output, the TD operators' outputs) and, inside
``TDMultiheadAttention``, the q/k/v projection outputs and the context arriving at ``out_proj``.
Nothing else changes: the operators keep their own state (a TD operator still emits the
difference of its ANN function of its accumulated *received* inputs, and does not learn of the
rounding of its output; an encoder keeps its unrounded remainder).  The integer payload
``clip(round(m / s), ...)`` is what is counted: ``bits`` is at most b by construction (checked:
``bits_within_budget``; a run that breaks it raises), ``max_abs`` is the largest |payload|, and
``layers[*].scale`` is ``s`` (``kind`` still says what the recipe sends unquantised).  Results:
``"quantized": {"<b>": {"per_T": {T: {...the per_T fields..., "scale_calibration_seconds"}}}}``
next to the unquantised ``per_T``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import operator
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECIPES = ("td_equivalent", "sta_equivalent", "sta_spiking_encoder", "spikezip", "qwen2")
DEFAULT_T = (1, 2, 4, 8, 16, 32)
MODEL_PATH = ROOT / "examples" / "vit_fashion_mnist" / "models" / "vit.safetensors"
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "sj_recipes.json"
REWRITE_TOL = 1e-4
BATCH = 250
# The multi-step simulation holds [T * batch, ...] tensors; above a few hundred image-steps per
# batch the CPU time goes into allocating them (3.5x slower at T=32 with 250 images): batches
# of at most BATCH images and STEP_BUDGET image-steps.  Images are independent and the state is
# reset per batch, so only the speed depends on this.
STEP_BUDGET = 800


def _batch(T: int) -> int:
    return max(1, min(BATCH, STEP_BUDGET // max(1, T)))


# --------------------------------------------------------------------------------------------
# weight-preserving rewrites of the timm-style ViT
# --------------------------------------------------------------------------------------------


def _row_slice(linear: nn.Linear, start: int, stop: int) -> nn.Linear:
    """A Linear computing rows ``start:stop`` of ``linear`` (same weights)."""
    out = nn.Linear(linear.in_features, stop - start, bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[start:stop])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[start:stop])
    return out


class _SplitQKVAttention(nn.Module):
    """Explicit attention on separate q/k/v Linears; every op keeps the batch dimension first."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        dim = attn.qkv.in_features
        self.heads = int(attn.heads)
        self.head_dim = dim // self.heads
        self.scale = float(attn.scale)
        self.q, self.k, self.v = (_row_slice(attn.qkv, i * dim, (i + 1) * dim) for i in range(3))
        self.proj = copy.deepcopy(attn.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _MHAAttention(nn.Module):
    """The same attention as one ``nn.MultiheadAttention`` (fused qkv -> ``in_proj_weight``)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        dim = attn.qkv.in_features
        heads = int(attn.heads)
        if not math.isclose(float(attn.scale), (dim // heads) ** -0.5, rel_tol=1e-9):
            raise ValueError("nn.MultiheadAttention needs the scale head_dim**-0.5")
        bias = attn.qkv.bias is not None
        if bias != (attn.proj.bias is not None):
            raise ValueError("nn.MultiheadAttention needs qkv and proj both with or both without bias")
        self.mha = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)
        with torch.no_grad():
            self.mha.in_proj_weight.copy_(attn.qkv.weight)
            self.mha.out_proj.weight.copy_(attn.proj.weight)
            if bias:
                self.mha.in_proj_bias.copy_(attn.qkv.bias)
                self.mha.out_proj.bias.copy_(attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.mha(x, x, x, need_weights=False)  # tuple unpacking, as the STA recipe expects
        return out


class _Block(nn.Module):
    def __init__(self, block: nn.Module, attention: type[nn.Module]):
        super().__init__()
        self.norm1 = copy.deepcopy(block.norm1)
        self.attn = attention(block.attn)
        self.norm2 = copy.deepcopy(block.norm2)
        self.fc1 = copy.deepcopy(block.mlp.fc1)
        self.act = copy.deepcopy(block.mlp.act)
        self.fc2 = copy.deepcopy(block.mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class _RewrittenViT(nn.Module):
    """The ViT with recipe-friendly attention.  With ``external_token_bias`` the class token and
    position embedding come in as ``token_bias`` ([B, 17, dim], see ``token_bias``)."""

    def __init__(self, vit: nn.Module, attention: type[nn.Module], external_token_bias: bool):
        super().__init__()
        self.external_token_bias = external_token_bias
        self.patch = copy.deepcopy(vit.patch_embed.proj)
        if not external_token_bias:
            self.cls_token = nn.Parameter(vit.cls_token.detach().clone())
            self.pos_embed = nn.Parameter(vit.pos_embed.detach().clone())
        self.blocks = nn.ModuleList(_Block(b, attention) for b in vit.blocks)
        self.norm = copy.deepcopy(vit.norm)
        self.head = copy.deepcopy(vit.head)

    def forward(self, x: torch.Tensor, token_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        if self.external_token_bias:
            x = torch.cat([token_bias[:, :1], x + token_bias[:, 1:]], dim=1)
        else:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def token_bias(vit: nn.Module) -> torch.Tensor:
    """``[1, 17, dim]``: class token + pos_embed[0] in row 0, pos_embed[i] in row i."""
    with torch.no_grad():
        cls = torch.cat([vit.cls_token, torch.zeros_like(vit.pos_embed[:, 1:])], dim=1)
        return cls + vit.pos_embed


def _check_vit(model: nn.Module) -> None:
    needed = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm", "head")
    missing = [n for n in needed if not hasattr(model, n)]
    block = model.blocks[0] if hasattr(model, "blocks") else None
    if missing or not all(hasattr(block, n) for n in ("norm1", "attn", "norm2", "mlp")) or not hasattr(block.attn, "qkv"):
        raise TypeError(
            "expected the timm-style ViT of examples/vit_fashion_mnist/model.py (build_vit): patch_embed.proj, "
            "cls_token, pos_embed, blocks[norm1, attn.qkv/proj/heads/scale, norm2, mlp.fc1/act/fc2], norm, head"
        )


def _rewrite(model: nn.Module, recipe: str, x_check: torch.Tensor) -> tuple[nn.Module, torch.Tensor | None, float]:
    """(rewritten ViT, token_bias or None, max |logit difference| to ``model`` on ``x_check``)."""
    _check_vit(model)
    if recipe == "td_equivalent":
        rewritten, bias = _RewrittenViT(model, _SplitQKVAttention, external_token_bias=True), token_bias(model)
    else:
        rewritten, bias = _RewrittenViT(model, _MHAAttention, external_token_bias=False), None
    rewritten.eval()
    with torch.no_grad():
        ref = model(x_check)
        args = (x_check,) if bias is None else (x_check, bias.expand(len(x_check), -1, -1))
        diff = float((rewritten(*args) - ref).abs().max())
    if not diff <= REWRITE_TOL:
        raise RuntimeError(f"{recipe}: rewritten ViT differs from the original by {diff:.3g} (> {REWRITE_TOL})")
    return rewritten, bias, diff


# --------------------------------------------------------------------------------------------
# message measurement
# --------------------------------------------------------------------------------------------


class _TensorStats:
    """Running statistics of one message tensor over steps, images and batches."""

    def __init__(self, kind: str, neurons: int):
        self.kind, self.neurons = kind, neurons
        self.entries = 0
        self.nonzero = 0
        self.max_abs = 0.0
        self.integer = True
        self.nonneg = True

    def add(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        v = values.detach().float()
        if scale is not None:  # spike count = emitted value / threshold
            v = v / scale
            rounded = v.round()
            if (v - rounded).abs().max() <= 1e-3:
                v = rounded
        self.entries += v.numel()
        self.nonzero += int(torch.count_nonzero(v))
        if v.numel():
            self.max_abs = max(self.max_abs, float(v.abs().max()))
            self.integer = self.integer and bool(torch.equal(v, v.round()))
            self.nonneg = self.nonneg and bool(v.min() >= 0)

    def add_integers(self, q: torch.Tensor) -> None:
        """``add`` for a tensor known to hold integers (a quantised payload)."""
        self.entries += q.numel()
        self.nonzero += int(torch.count_nonzero(q))
        if q.numel():
            lo, hi = torch.aminmax(q)
            self.max_abs = max(self.max_abs, float(-lo), float(hi))
            self.nonneg = self.nonneg and bool(lo >= 0)

    @property
    def bits(self) -> int:
        if not self.integer:
            return 32
        m = int(round(self.max_abs))
        if m == 0:
            return 0
        return math.ceil(math.log2(m + 1)) if self.nonneg else math.ceil(math.log2(2 * m + 1))

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "neurons": self.neurons,
            "bits": self.bits,
            "messages_per_neuron_per_step": self.nonzero / self.entries if self.entries else 0.0,
            "max_abs": self.max_abs,
        }


def _is_sta_encoder(module: nn.Module) -> bool:
    from spikingjelly.activation_based.ann2snn.recipes.sta_transformer import _STASpikeEncoder

    return isinstance(module, _STASpikeEncoder)


def _encoder_threshold(encoder: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """The per-channel threshold an STA encoder multiplies its spike counts by, broadcastable to
    its ``[T, B, ...]`` output (clamped as the encoder does)."""
    dim = encoder.channel_dim if encoder.channel_dim < 0 else encoder.channel_dim + 1  # + time axis
    shape = [1] * seq.dim()
    shape[dim] = -1
    th = encoder.v_threshold.to(seq.dtype).reshape(shape)
    return torch.clamp(th, min=torch.finfo(th.dtype).eps)


def _quantize(seq: torch.Tensor, scale: float, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer payload ``clip(round(seq / scale), -qmax, qmax)``, the value it stands for
    ``scale * payload``); a layer whose calibration maximum is 0 (``scale == 0``) sends zeros."""
    if scale <= 0.0:
        q = torch.zeros_like(seq)
        return q, q
    q = (seq / scale).round_().clamp_(-qmax, qmax)
    return q, q * scale


class _MessageMeter:
    """Forward hooks on a converted (multi-step) FX model; see the module docstring.

    ``mode``: ``"measure"`` (count the messages), ``"max"`` (only record each message's largest
    |value|, for the quantisation scales: ``max_abs()``), ``"quantize"`` (replace every message
    ``m`` by ``scales[name] * clip(round(m / scales[name]), -qmax, qmax)`` before it reaches the
    next layer, and count the integer payloads)."""

    def __init__(self, snn: torch.fx.GraphModule, mode: str = "measure", scales: dict[str, float] | None = None,
                 qmax: int | None = None):
        from spikingjelly.activation_based import base
        from spikingjelly.activation_based.ann2snn.operators import TDMultiheadAttention

        if mode not in ("measure", "max", "quantize"):
            raise ValueError(f"mode must be measure, max or quantize, got {mode!r}")
        if mode == "quantize" and (scales is None or qmax is None):
            raise ValueError("quantize needs scales and qmax")
        self.mode, self.scales, self.qmax = mode, scales, qmax
        self.maxima: dict[str, float] = {}
        self.stats: dict[str, _TensorStats] = {}
        self._handles = []
        self._wrapped = []
        modules = dict(snn.named_modules())
        calls = [n for n in snn.graph.nodes if n.op == "call_module"]

        def is_encoder(node) -> bool:
            return node.op == "call_module" and _is_sta_encoder(modules[node.target])

        def feeds_only_encoders(node) -> bool:  # directly or through a tuple getitem
            return all(
                is_encoder(u) or (u.op == "call_function" and u.target is operator.getitem and feeds_only_encoders(u))
                for u in node.users
            )

        # a module whose only consumer is an STA encoder: the encoder's output is the message
        encoded = {n.target for n in calls if not is_encoder(n) and n.users and feeds_only_encoders(n)}
        for node in calls:
            name, module = node.target, modules[node.target]
            if not isinstance(module, base.MemoryModule) or not node.args:  # shape ops, time constants
                continue
            if _is_sta_encoder(module):
                self._hook(module, name, "spike_count", module)
            elif name not in encoded:
                self._hook(module, name, "float", None)
            if isinstance(module, TDMultiheadAttention):
                for proj in ("q_proj", "k_proj", "v_proj"):
                    self._wrap(getattr(module, proj), f"{name}.{proj}", use_input=False)
                self._wrap(module.out_proj, f"{name}.context", use_input=True)

    def _stats(self, name: str, kind: str, seq: torch.Tensor) -> _TensorStats:
        if name not in self.stats:
            self.stats[name] = _TensorStats(kind, int(seq[0, 0].numel()))
        return self.stats[name]

    def _message(self, name: str, kind: str, seq: torch.Tensor, encoder: nn.Module | None) -> torch.Tensor:
        """Record one message tensor; returns what reaches the next layer (``seq`` itself unless
        quantising)."""
        if self.mode == "max":
            self.maxima[name] = max(self.maxima.get(name, 0.0), float(seq.detach().abs().max()) if seq.numel() else 0.0)
            return seq
        if self.mode == "quantize":
            q, value = _quantize(seq, self.scales[name], self.qmax)
            self._stats(name, kind, seq).add_integers(q)  # the integer payload is the message
            return value
        self._stats(name, kind, seq).add(seq, None if encoder is None else _encoder_threshold(encoder, seq))
        return seq

    def _hook(self, module: nn.Module, name: str, kind: str, encoder: nn.Module | None) -> None:
        def hook(_module, _inputs, output):
            seq = output[0] if isinstance(output, tuple) else output
            sent = self._message(name, kind, seq, encoder)
            if sent is seq:
                return None
            return (sent, *output[1:]) if isinstance(output, tuple) else sent

        self._handles.append(module.register_forward_hook(hook))

    def _wrap(self, module: nn.Module, name: str, use_input: bool) -> None:
        original = module.multi_step_forward

        def wrapped(x_seq, *args, **kwargs):
            if use_input:  # the attention context arriving at out_proj
                return original(self._message(name, "float", x_seq, None), *args, **kwargs)
            return self._message(name, "float", original(x_seq, *args, **kwargs), None)

        module.multi_step_forward = wrapped
        self._wrapped.append(module)

    def reset(self) -> None:
        self.stats = {}
        self.maxima = {}

    def max_abs(self) -> dict[str, float]:
        """Per message, the largest |value| it carried (``mode="max"``): for an STA encoder the
        emitted value ``count * threshold``, not the count."""
        return dict(self.maxima)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._wrapped:
            del module.multi_step_forward  # back to the class method

    def summary(self) -> dict:
        layers = {name: s.summary() for name, s in self.stats.items()}
        if self.mode == "quantize":
            for name, layer in layers.items():
                layer["scale"] = self.scales[name]
        out = _totals(self.stats.values())
        kinds = {}
        for kind, pick in (("float", lambda s: s.bits == 32), ("integer", lambda s: s.bits < 32)):
            chosen = [s for s in self.stats.values() if pick(s)]
            if chosen:
                kinds[kind] = {"messages": len(chosen), **_totals(chosen)}
        return {**out, "by_kind": kinds, "layers": layers}


def _totals(stats) -> dict:
    stats = list(stats)
    entries = sum(s.entries for s in stats)
    return {
        "bits_per_message": max((s.bits for s in stats), default=0),
        "messages_per_neuron_per_step": sum(s.nonzero for s in stats) / entries if entries else 0.0,
        "max_abs": max((s.max_abs for s in stats), default=0.0),
        "neurons": sum(s.neurons for s in stats),
    }


# --------------------------------------------------------------------------------------------
# conversion and simulation
# --------------------------------------------------------------------------------------------


def _first_then_zero(x: torch.Tensor, T: int) -> torch.Tensor:
    seq = torch.zeros((T, *x.shape), dtype=x.dtype)
    seq[0] = x
    return seq


def _simulate(snn: nn.Module, meter: _MessageMeter, x: np.ndarray, y: np.ndarray, ann_logits: torch.Tensor,
              T: int, bias: torch.Tensor | None) -> dict:
    """Run ``snn`` for T steps per batch (state reset between batches); accuracy + messages."""
    from spikingjelly.activation_based import functional

    functional.set_step_mode(snn, "m")
    meter.reset()
    pixels = _TensorStats("float", int(np.prod(x.shape[1:])))
    correct, max_diff = 0, 0.0
    batch = _batch(T)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch])
            functional.reset_net(snn)
            x_seq = _first_then_zero(xb, T)
            pixels.add(x_seq)
            args = (x_seq,) if bias is None else (x_seq, _first_then_zero(bias.expand(len(xb), -1, -1), T))
            logits = snn(*args).sum(0)
            correct += int((logits.argmax(1).numpy() == y[i : i + batch]).sum())
            max_diff = max(max_diff, float((logits - ann_logits[i : i + batch]).abs().max()))
    return {
        "accuracy": correct / len(x),
        "max_abs_logit_diff_vs_ann": max_diff,
        **meter.summary(),
        "input": pixels.summary(),
    }


def _message_maxima(snn: nn.Module, x: np.ndarray, T: int, bias: torch.Tensor | None) -> dict[str, float]:
    """Largest |value| of every message over the images ``x`` (the recipe unquantised, T steps,
    presented as in ``_simulate``)."""
    from spikingjelly.activation_based import functional

    functional.set_step_mode(snn, "m")
    meter = _MessageMeter(snn, mode="max")
    batch = _batch(T)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = torch.from_numpy(x[i : i + batch])
                functional.reset_net(snn)
                args = (_first_then_zero(xb, T),)
                if bias is not None:
                    args += (_first_then_zero(bias.expand(len(xb), -1, -1), T),)
                snn(*args)
    finally:
        meter.close()
    return meter.max_abs()


def _quantized_runs(net: nn.Module, x: np.ndarray, y: np.ndarray, ann_logits: torch.Tensor, T: int,
                    bias: torch.Tensor | None, calib: np.ndarray, bits: list[int]) -> dict[int, dict]:
    """For each b in ``bits``: ``net`` simulated with every message quantised to a b-bit signed
    payload (per-layer scale = max |message| over ``calib`` at the same T / (2^(b-1) - 1))."""
    start = time.perf_counter()
    maxima = _message_maxima(net, calib, T, bias)
    calib_s = time.perf_counter() - start
    out = {}
    for b in bits:
        qmax = 2 ** (b - 1) - 1
        scales = {name: m / qmax for name, m in maxima.items()}
        meter = _MessageMeter(net, mode="quantize", scales=scales, qmax=qmax)
        start = time.perf_counter()
        try:
            res = _simulate(net, meter, x, y, ann_logits, T, bias)
        finally:
            meter.close()
        missing = sorted(set(maxima) - set(res["layers"]))
        if missing:
            raise RuntimeError(f"quantised run did not send {missing}")
        res["bits_within_budget"] = res["bits_per_message"] <= b
        if not res["bits_within_budget"]:
            raise RuntimeError(f"T={T}, b={b}: a message needs {res['bits_per_message']} bits")
        res["scale_calibration_seconds"] = round(calib_s, 3)
        res["simulate_seconds"] = round(time.perf_counter() - start, 3)
        out[b] = res
    return out


def _calibration_loader(calib: np.ndarray, batch: int = 256) -> list:
    return [(torch.from_numpy(calib[i : i + batch]),) for i in range(0, len(calib), batch)]


def _convert_fx(rewritten: nn.Module, recipe: str, T: int, calib: np.ndarray | None) -> torch.fx.GraphModule:
    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.recipes import STATransformerRecipe, TransformerTDEquivalentRecipe

    if recipe == "td_equivalent":
        sj_recipe = TransformerTDEquivalentRecipe(time_steps=T)
    elif recipe == "sta_equivalent":
        sj_recipe = STATransformerRecipe(time_steps=T, mode="equivalent")
    else:
        sj_recipe = STATransformerRecipe(dataloader=_calibration_loader(calib), time_steps=T, mode="spiking_encoder")
    return Converter(recipe=sj_recipe, device="cpu").convert(copy.deepcopy(rewritten)).eval()


def _run_fx_recipe(model, recipe, x, y, timesteps, calib, quantize_bits=(), quantize_timesteps=None) -> dict:
    if recipe == "sta_spiking_encoder" and (calib is None or len(calib) == 0):
        return {"refused": "STATransformerRecipe(mode='spiking_encoder') calibrates its encoder thresholds and needs calibration images"}
    n_check = min(256, len(x))
    rewritten, bias, rewrite_diff = _rewrite(model, recipe, torch.from_numpy(x[:n_check]))
    with torch.no_grad():
        ann_logits = torch.cat([model(torch.from_numpy(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])
    out = {
        "rewrite": "split qkv + explicit matmul/softmax attention; cls/pos as a step-0 token_bias input"
        if recipe == "td_equivalent"
        else "nn.MultiheadAttention(batch_first=True) with the fused qkv/proj weights; cls/pos as recipe time constants",
        "rewrite_max_abs_diff": rewrite_diff,
        "ann_accuracy": float((ann_logits.argmax(1).numpy() == y).mean()),
        "per_T": {},
    }
    # TD operators do not depend on T (time_steps is metadata): convert once.  STA time constants
    # and encoder thresholds are built for one T: convert for every T.
    quantize_bits = [int(b) for b in quantize_bits]
    if quantize_bits and (calib is None or len(calib) == 0):
        raise ValueError("quantised messages need calibration images for their scales")
    q_timesteps = list(timesteps) if quantize_timesteps is None else [int(t) for t in quantize_timesteps]
    all_T = sorted(set(timesteps) | (set(q_timesteps) if quantize_bits else set()))
    if quantize_bits:
        out["quantized"] = {str(b): {"per_T": {}} for b in quantize_bits}
    snn = _convert_fx(rewritten, recipe, max(all_T), calib) if recipe == "td_equivalent" else None
    for T in all_T:
        start = time.perf_counter()
        net = snn if snn is not None else _convert_fx(rewritten, recipe, T, calib)
        convert_s = time.perf_counter() - start
        if T in timesteps:
            meter = _MessageMeter(net)
            start = time.perf_counter()
            res = _simulate(net, meter, x, y, ann_logits, T, bias)
            meter.close()
            res["convert_seconds"], res["simulate_seconds"] = round(convert_s, 3), round(time.perf_counter() - start, 3)
            out["per_T"][T] = res
        if quantize_bits and T in q_timesteps:
            for b, res in _quantized_runs(net, x, y, ann_logits, T, bias, calib, quantize_bits).items():
                res["convert_seconds"] = round(convert_s, 3)
                out["quantized"][str(b)]["per_T"][T] = res
                print(f"  {recipe} {b}-bit T={T}: acc {res['accuracy']:.4f} bits {res['bits_per_message']} "
                      f"msg/neuron/step {res['messages_per_neuron_per_step']:.4f} "
                      f"({res['simulate_seconds']:.1f} s)", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# recipes that do not apply
# --------------------------------------------------------------------------------------------


def _finetune_epoch_seconds(model: nn.Module, x: np.ndarray, y: np.ndarray, images: int = 60000, batch: int = 128, steps: int = 4) -> float:
    """Seconds one float fine-tuning epoch over ``images`` would take here (timed on a few
    AdamW steps of a throw-away copy; only the timing is kept)."""
    net = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    idx = np.arange(batch) % len(x)
    xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / (steps * batch) * images


def _spikezip_forced(model: nn.Module, x: np.ndarray, y: np.ndarray, timesteps: list[int]) -> dict:
    """What the recipe does when given the float ViT anyway: it does not refuse, it swaps Linear /
    Conv2d / LayerNorm for its TD versions and leaves GELU and the attention core alone.  Run in
    single-step mode (multi-step fails inside the untouched attention), image at step 0 then
    zeros; accuracy and max |summed logits - ANN logits| per T."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import ModuleConverter
    from spikingjelly.activation_based.ann2snn.recipes import SpikeZIPTFQANNRecipe

    out = {}
    with torch.no_grad():
        ann = torch.cat([model(torch.from_numpy(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])
        for T in timesteps:  # without quantisers the recipe releases each bias over time_steps steps
            snn = ModuleConverter(recipe=SpikeZIPTFQANNRecipe(time_steps=T, model_family="vit"), device="cpu").convert(model)
            functional.set_step_mode(snn, "s")
            correct, diff = 0, 0.0
            for i in range(0, len(x), BATCH):
                xb = torch.from_numpy(x[i : i + BATCH])
                functional.reset_net(snn)
                logits = sum(snn(xb if t == 0 else torch.zeros_like(xb)) for t in range(T))
                correct += int((logits.argmax(1).numpy() == y[i : i + BATCH]).sum())
                diff = max(diff, float((logits - ann[i : i + BATCH]).abs().max()))
            out[T] = {"accuracy": correct / len(x), "max_abs_logit_diff_vs_ann": diff}
    return out


def _spikezip(model: nn.Module, x: np.ndarray, y: np.ndarray, timesteps: list[int]) -> dict:
    from spikingjelly.activation_based.ann2snn.recipes import SpikeZIPTFQANNRecipe

    quantisers = [n for n, m in model.named_modules() if SpikeZIPTFQANNRecipe._is_quantizer(m)]
    if quantisers:
        raise NotImplementedError("a SpikeZIP QANN ViT was given; only the float ViT is handled here")
    epoch_s = _finetune_epoch_seconds(model, x, y)
    return {
        "refused": (
            "SpikeZIPTFQANNRecipe converts an already quantised ANN (QANN) and 'does not quantize or "
            "post-train an ANN'. The float ViT has no quantisers (modules with s/sym/pos_max/neg_min), "
            "a GELU MLP (the recipe only maps ReLU, absorbed into an unsigned quantiser) and an attention "
            "without quan_q/quan_k/quan_v/attn_quan/after_attn_quan/quan_proj; converting it anyway "
            "leaves GELU, softmax and q@k^T applied to per-step differences, i.e. not equivalent. It would "
            "need a SpikeZIP-style QANN (GELU->ReLU, LSQ quantisers after every Linear/LayerNorm/q/k/v/"
            "attention/context/proj, written by us - SpikingJelly ships none) and quantisation-aware "
            "fine-tuning; ST-BIF neurons then send signed ternary spikes (2 bits), one per step, so T must "
            "be at least the quantisation level (more where the layers' corrections pile up)."
        ),
        "recipe_provides_qann_conversion": False,
        "qat_cost_estimate": {
            "float_finetune_epoch_seconds_60k_images": round(epoch_s, 1),
            "note": "timed here (torch CPU threads: %d) on a few AdamW steps of the float ViT; QAT adds the "
            "quantisers' forward/backward and needs several epochs, plus writing the QANN ViT itself"
            % torch.get_num_threads(),
        },
        "forced_conversion_of_float_vit": _spikezip_forced(model, x, y, timesteps),
    }


def _qwen2(model: nn.Module) -> dict:
    from spikingjelly.activation_based.ann2snn.recipes import Qwen2SNNConfig, calibrate_qwen2_snn

    try:
        calibrate_qwen2_snn(model.eval(), [], Qwen2SNNConfig())
    except (TypeError, ValueError, AttributeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:  # pragma: no cover - the ViT is not a Qwen2 LM
        error = "accepted unexpectedly"
    return {
        "refused": (
            "Qwen2SNNRecipe is specific to Hugging Face Qwen2 causal language models (token embedding, "
            "RMSNorm, SiLU-gated MLP, rotary causal attention with a KV cache, config.model_type == "
            "'qwen2'); a ViT has none of these. The recipe's own check says: " + error
        )
    }


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def run_sj_recipe(model: nn.Module, recipe: str, x: np.ndarray, y: np.ndarray, timesteps: list[int],
                  calib: np.ndarray | None, quantize_bits: list[int] = (),
                  quantize_timesteps: list[int] | None = None) -> dict:
    """Convert ``model`` (the timm-style ViT, eval mode) with SpikingJelly recipe ``recipe`` and
    simulate it for every T in ``timesteps`` on ``x`` (float32 [N, 1, 28, 28]) / ``y`` (labels).

    ``recipe`` is one of ``RECIPES``.  ``calib`` (float32 [M, 1, 28, 28]) calibrates
    ``sta_spiking_encoder``.  Returns ``{"refused": why, ...}`` for a recipe that does not
    apply, else ``{"rewrite", "rewrite_max_abs_diff", "ann_accuracy", "per_T": {T: {...}}}`` with,
    per T, ``accuracy``, ``max_abs_logit_diff_vs_ann``, ``bits_per_message``,
    ``messages_per_neuron_per_step``, ``max_abs``, ``neurons``, ``by_kind``, ``layers``,
    ``input`` (see the module docstring for what is counted as a message).

    With ``quantize_bits`` (e.g. ``[2, 3, 4, 6, 8]``) the result also has ``"quantized": {"<b>":
    {"per_T": {T: {...}}}}``: the same recipe with every message quantised to a b-bit signed
    payload (scales from ``calib``), for every T in ``quantize_timesteps`` (default
    ``timesteps``); see "Quantised messages" in the module docstring."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    model = model.eval()
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    if recipe == "spikezip":
        return _spikezip(model, x, y, [int(t) for t in timesteps])
    if recipe == "qwen2":
        return _qwen2(model)
    return _run_fx_recipe(model, recipe, x, y, [int(t) for t in timesteps], calib, quantize_bits, quantize_timesteps)


def _load_model(path: Path, random_init: bool) -> nn.Module:
    from examples.vit_fashion_mnist.model import build_vit, load_vit

    if path.exists():
        return load_vit(str(path))
    if not random_init:
        raise SystemExit(f"{path} does not exist (train the ViT first, or pass --random-init for a smoke test)")
    torch.manual_seed(0)
    return build_vit().eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL_PATH)
    p.add_argument("--random-init", action="store_true", help="use an untrained build_vit() when --model is missing")
    p.add_argument("--samples", type=int, default=1000, help="first N Fashion-MNIST test images")
    p.add_argument("--calib", type=int, default=1024, help="seeded random training images (STA spiking_encoder)")
    p.add_argument("--T", default=",".join(map(str, DEFAULT_T)))
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--out", type=Path, default=RESULTS_PATH)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (more than the free cores is much slower)")
    p.add_argument("--quantize-bits", default="",
                   help="also run every recipe with each message quantised to a b-bit signed payload, "
                   "for each b of this comma list (e.g. 2,3,4,6,8); default: off")
    p.add_argument("--quantize-T", default=None, help="T values for the quantised runs (default: --T)")
    args = p.parse_args(argv)

    import spikingjelly

    from examples.fashion_mnist.data import load_fashion_mnist

    torch.set_num_threads(args.threads)
    timesteps = [int(t) for t in args.T.split(",")]
    quantize_bits = [int(b) for b in args.quantize_bits.split(",") if b.strip()]
    if any(b < 2 for b in quantize_bits):
        raise SystemExit("--quantize-bits: a signed payload needs at least 2 bits")
    quantize_T = None if args.quantize_T is None else [int(t) for t in args.quantize_T.split(",")]
    model = _load_model(args.model, args.random_init)
    x_test, y_test = load_fashion_mnist("test")
    x, y = x_test[: args.samples], y_test[: args.samples]
    x_train, _ = load_fashion_mnist("train")
    calib = x_train[np.sort(np.random.default_rng(0).choice(len(x_train), args.calib, replace=False))]
    results = {
        "model": str(args.model) if args.model.exists() else "UNTRAINED build_vit() (random init, seed 0)",
        "test_images": len(x),
        "calibration_images": len(calib),
        "timesteps": timesteps,
        "torch_threads": args.threads,
        **({"quantize_bits": quantize_bits, "quantize_timesteps": quantize_T or timesteps} if quantize_bits else {}),
        "versions": {"spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"), "torch": torch.__version__,
                     "python": platform.python_version()},
        "machine": platform.platform(),
        "recipes": {},
    }
    for recipe in args.recipes.split(","):
        start = time.perf_counter()
        r = run_sj_recipe(model, recipe, x, y, timesteps, calib, quantize_bits, quantize_T)
        r["seconds"] = round(time.perf_counter() - start, 2)
        results["recipes"][recipe] = r
        if "refused" in r:
            print(f"{recipe}: refused: {r['refused'][:120]}...", flush=True)
            continue
        for T, e in r["per_T"].items():
            print(f"{recipe} T={T}: acc {e['accuracy']:.4f} bits {e['bits_per_message']} "
                  f"msg/neuron/step {e['messages_per_neuron_per_step']:.4f} max|v| {e['max_abs']:.4g}", flush=True)
        for b, q in r.get("quantized", {}).items():
            print(f"{recipe} {b}-bit: " + ", ".join(f"T={T} {e['accuracy']:.4f}" for T, e in q["per_T"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
