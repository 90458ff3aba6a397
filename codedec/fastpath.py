"""A lean forward for Llama-architecture decoders: the same arithmetic as transformers', fewer steps.

Why: on a CPU a decode forward of SmolLM2-135M is a few large kernels (the int4 products, the
attention over the cache) and some 3,000 small tensor operations, most of them transformers'
generic plumbing — kwargs, output records, mask builders, casts that are no-ops here. This module
runs the decoder stack of a ``LlamaForCausalLM`` directly from its modules: embedding, then per
layer RMSNorm, q/k/v projections (whatever the layers are: ``nn.Linear`` or ``codedec.quant``'s
int4 layers), RoPE with cos/sin from the model's own rotary module, the cache write through the
cache's ``update`` (as transformers does), one SDPA call with grouped K/V heads, the output
projection and the SiLU MLP; the final norm on the kept rows only, then ``lm_head``. On an int4
model (``codedec.quant``) decode rows take q|k|v and gate|up as one int4 product each
(``Int4Linear.concat``: 4 int4 calls per layer instead of 7, casts included), and a layer whose
projections are all int4 runs as one direct pass over the int4 kernel (``_int4_layer``: no module
calls, norms and RoPE in the fewest operators that give the same values) — or, where those
projections have ``codedec.q8kernel`` blocks and the activation is SiLU, as two C++ calls around
attention (``q8kernel.layer_pre`` / ``layer_post``).

Contract: :func:`lean_forward` returns exactly what ``model(input_ids, position_ids,
past_key_values, attention_mask, logits_to_keep)`` returns as logits [1, keep, V], and writes the
same keys and values into the cache (tested bit for bit in fp32 against transformers' forward,
over prefills, single steps, draft-tree masks and shifted positions). One exception: the fused
q8 layers sum their norms in another order than torch's operators, so there the results agree
to ~1e-5, not bit for bit (tested; ``q8kernel.use_fused(False)`` restores bit-exactness).
``codedec.forward`` is its only caller; models it does not support (:func:`supports`) take
transformers' forward.

``$CODEDEC_FASTPATH=0`` turns it off (transformers' forward everywhere); so does a ``forward``
set on the model instance (a wrapper that counts or instruments calls is honoured).

What it is not: a new model implementation. It reads the modules' weights and calls their own
``forward`` for the linear layers, norms' parameters and activation, so quantized layers, other
RoPE scalings (the rotary module computes cos/sin) and biases keep working.
"""

from __future__ import annotations

import os
import weakref
from functools import partial

import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import LlamaForCausalLM, rotate_half

from codedec import q8kernel
from codedec.cache import GrowingLayer
from codedec.quant import INT4_MAX_ROWS, Int4Linear


def supports(model) -> bool:
    """True for a ``LlamaForCausalLM`` in inference (eval) mode with the plain SiLU MLP, unless
    ``$CODEDEC_FASTPATH`` is ``0``."""
    if os.environ.get("CODEDEC_FASTPATH", "1") == "0":
        return False
    if type(model) is not LlamaForCausalLM or model.training:
        return False
    config = model.config
    return getattr(config, "hidden_act", None) == "silu" and getattr(config, "pretraining_tp", 1) == 1


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """``LlamaRMSNorm``: computed in fp32, scaled in the input's dtype (one fused op for fp32
    input — the same result, tested)."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return torch.rms_norm(x, x.shape[-1:], norm.weight, norm.variance_epsilon)
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _causal(p: int, t: int, device) -> torch.Tensor:
    """Boolean mask [1, 1, p, t + p]: new row i sees the t cached positions and new ones <= i."""
    return torch.ones(p, t + p, dtype=torch.bool, device=device).tril(t)[None, None]


class _Joint:
    """Per layer, the int4 projections that share an input as one layer (``Int4Linear.concat``):
    ``qkv`` (q, k, v) and ``gate_up`` (gate, up), or None where the layers are not all int4; and
    ``plans``: the layer's :class:`_Int4Plan` where all of it qualifies, else None."""

    def __init__(self, model) -> None:
        self.qkv: list = []
        self.gate_up: list = []
        for layer in model.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            self.qkv.append(_concat([a.q_proj, a.k_proj, a.v_proj]))
            self.gate_up.append(_concat([mlp.gate_proj, mlp.up_proj]))
        self.plans: list = self.make_plans(model)

    def make_plans(self, model) -> list:
        """Each layer's :class:`_Int4Plan` (None where the layer does not qualify)."""
        return [_Int4Plan.of(layer, q, g) for layer, q, g in zip(model.model.layers, self.qkv, self.gate_up,
                                                                 strict=True)]


class _Int4Plan:
    """What a decode-rows pass through one all-int4 layer reads, looked up once: the norms'
    weights, the joint and single int4 layers' ``products`` (the q8 kernel or torch's int4 one,
    as the modules would pick), head counts. The pass (:func:`_int4_layer`) calls them directly
    instead of the modules (whose per-call plumbing is a large share of a one-token forward on a
    CPU)."""

    __slots__ = ("in_norm", "post_norm", "qkv", "o", "gate_up", "down", "hq", "hk", "d", "scaling", "n_gate",
                 "act", "blocks")

    @classmethod
    def of(cls, layer, qkv, gate_up) -> _Int4Plan | None:
        a, mlp = layer.self_attn, layer.mlp
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        singles = (a.o_proj, mlp.down_proj)
        if (qkv is None or gate_up is None or any(type(m) is not Int4Linear or m.bias is not None for m in singles)
                or qkv.bias is not None or gate_up.bias is not None
                or any(n.weight.dtype != torch.float32 for n in norms)):
            return None
        plan = cls()
        plan.in_norm = (norms[0].weight, norms[0].variance_epsilon)
        plan.post_norm = (norms[1].weight, norms[1].variance_epsilon)
        plan.qkv, plan.gate_up = qkv.products, gate_up.products
        plan.o, plan.down = a.o_proj.products, mlp.down_proj.products
        plan.d = a.head_dim
        plan.hq, plan.hk = a.q_proj.out_features // plan.d, a.k_proj.out_features // plan.d
        plan.scaling = a.scaling
        plan.n_gate = mlp.gate_proj.out_features
        plan.act = mlp.act_fn
        # the q8 kernel's blocks of q|k|v, o, gate|up, down: the whole layer in two C++ calls
        # (q8kernel.layer_pre / layer_post) where they all have them and the activation is SiLU
        blocks = (qkv.blocks, a.o_proj.blocks, gate_up.blocks, mlp.down_proj.blocks)
        silu = type(mlp.act_fn).__name__ in ("SiLUActivation", "SiLU")
        plan.blocks = blocks if silu and all(b is not None for b in blocks) else None
        return plan


def _int4_layer(plan: _Int4Plan, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, update,
                mask: torch.Tensor | None) -> torch.Tensor:
    """One decoder layer on P <= ``INT4_MAX_ROWS`` rows of an all-int4 layer: ``x`` [1, P, H] fp32
    -> [1, P, H]; ``update(k, v)`` writes the new keys/values [1, Hkv, P, D] into the cache and
    returns all of them. Op by op, the same arithmetic as the generic loop in :func:`lean_forward`
    (tested bit for bit against transformers); RoPE's ``rotate_half(t) * sin`` as ``t.roll(D/2)
    * sin_signed`` (``sin_signed``: the first half negated — the same products, signs moved).
    With ``plan.blocks`` (and the q8 kernel in use): the fused C++ calls, equal to ~1e-5."""
    p, hidden = x.shape[1], x.shape[2]
    d, hq, hk = plan.d, plan.hq, plan.hk
    if plan.blocks is not None and q8kernel.USE and q8kernel.FUSED:  # the layer in two C++ calls
        qkv, o_w, gate_up, down = plan.blocks
        q, k, v = q8kernel.layer_pre(x.view(p, hidden), *plan.in_norm, qkv, cos, sin_signed, hq, hk)
        keys, values = update(k, v)  # [1, Hkv, T + P, D]
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=plan.scaling,
                                           enable_gqa=hq != keys.shape[1])  # [1, Hq, P, D]
        return q8kernel.layer_post(x.view(p, hidden), o, o_w, *plan.post_norm, gate_up, plan.n_gate,
                                   down).view(1, p, hidden)
    h = torch.rms_norm(x, (hidden,), *plan.in_norm)
    heads = plan.qkv(h.view(p, hidden)).view(1, p, -1, d).transpose(1, 2)  # [1, Hq + 2 Hkv, P, D]
    qk = heads[:, : hq + hk]
    qk = qk * cos + qk.roll(d // 2, -1) * sin_signed  # q and k rotated together
    keys, values = update(qk[:, hq:], heads[:, hq + hk:])  # [1, Hkv, T + P, D]
    o = F.scaled_dot_product_attention(qk[:, :hq], keys, values, attn_mask=mask, scale=plan.scaling,
                                       enable_gqa=hq != keys.shape[1])  # [1, Hq, P, D]
    x = x + plan.o(o.transpose(1, 2).reshape(p, hq * d)).view(1, p, hidden)
    h = torch.rms_norm(x, (hidden,), *plan.post_norm)
    gate, up = plan.gate_up(h.view(p, hidden)).split(plan.n_gate, dim=-1)  # [P, I] each
    return x + plan.down(plan.act(gate) * up).view(1, p, hidden)


def _concat(parts):
    if all(type(p) is Int4Linear for p in parts):
        return Int4Linear.concat(parts)
    return None


_JOINT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Joint


def _joint(model) -> _Joint:
    """``model``'s :class:`_Joint`, built on first use."""
    joint = _JOINT.get(model)
    if joint is None:
        joint = _JOINT[model] = _Joint(model)
    return joint


def use_int4_plans(model, on: bool) -> None:
    """Let decode rows of ``model``'s all-int4 layers take the direct int4 pass (``on``, the
    default) or the generic loop through the modules (benchmarks compare the two)."""
    joint = _joint(model)
    joint.plans = joint.make_plans(model) if on else [None] * len(joint.plans)


@torch.inference_mode()
def lean_forward(model, kv, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
                 keep: int) -> torch.Tensor:
    """Logits [1, keep, V] after the P ids of ``input_ids`` [1, P] at ``positions`` [1, P],
    appended to ``kv`` (a transformers ``Cache``: ``kv.update(k, v, layer)``); ``mask``: None
    (causal) or an additive float mask [1, 1, P, T + P] over the T cached and P new positions.

    Decode rows (P <= ``INT4_MAX_ROWS``) of an int4 model use joint q|k|v and gate|up products
    (one int4 call each) and rotate q and k in one go."""
    m = model.model
    p = input_ids.shape[1]
    t = kv.get_seq_length()
    joint = _joint(model)
    small = p <= INT4_MAX_ROWS
    x = m.embed_tokens(input_ids)  # [1, P, H]
    cos, sin = m.rotary_emb(x, positions)  # [1, P, D] each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, P, D]: broadcast over heads
    if mask is None and p > 1:
        mask = _causal(p, t, x.device)
    sin_signed = None
    direct_cache = not getattr(kv, "offloading", False)  # else kv.update moves layers between devices
    for idx, layer in enumerate(m.layers):
        plan = joint.plans[idx] if small else None
        if plan is not None and x.dtype == torch.float32:
            if sin_signed is None:
                half = sin.shape[-1] // 2
                sin_signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
            cached = kv.layers[idx] if idx < len(kv.layers) else None
            update = (cached.update if direct_cache and type(cached) is GrowingLayer
                      else partial(kv.update, layer_idx=idx))
            x = _int4_layer(plan, x, cos, sin_signed, update, mask)
            continue
        attn = layer.self_attn
        d = attn.head_dim
        h = _rms(x, layer.input_layernorm)
        qkv = joint.qkv[idx] if small else None
        if qkv is not None:
            hq = attn.q_proj.out_features // d
            hk = attn.k_proj.out_features // d
            heads = qkv(h).view(1, p, -1, d).transpose(1, 2)  # [1, Hq + 2 Hkv, P, D]
            qk = heads[:, : hq + hk]
            qk = qk * cos + rotate_half(qk) * sin  # q and k rotated together (elementwise: the same values)
            q, k, v = qk[:, :hq], qk[:, hq:], heads[:, hq + hk:]
        else:
            q = attn.q_proj(h).view(1, p, -1, d).transpose(1, 2)  # [1, Hq, P, D]
            k = attn.k_proj(h).view(1, p, -1, d).transpose(1, 2)  # [1, Hkv, P, D]
            v = attn.v_proj(h).view(1, p, -1, d).transpose(1, 2)  # [1, Hkv, P, D]
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        keys, values = kv.update(k, v, idx)  # [1, Hkv, T + P, D]
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling,
                                           enable_gqa=q.shape[1] != keys.shape[1])  # [1, Hq, P, D]
        x = x + attn.o_proj(o.transpose(1, 2).reshape(1, p, -1))
        h = _rms(x, layer.post_attention_layernorm)
        mlp = layer.mlp
        gate_up = joint.gate_up[idx] if small else None
        if gate_up is not None:
            gate, up = gate_up(h).split(mlp.gate_proj.out_features, dim=-1)
        else:
            gate, up = mlp.gate_proj(h), mlp.up_proj(h)
        x = x + mlp.down_proj(mlp.act_fn(gate) * up)
    return model.lm_head(_rms(x[:, p - keep:], m.norm))  # [1, keep, V]
