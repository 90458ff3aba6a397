"""``codedec.fastpath``: the lean forward returns transformers' logits and writes transformers'
keys/values — bit for bit in fp32 and bf16 here (same kernels, same order), over a prefill on an empty
cache, a chunk after cached positions, single steps, a draft-tree mask and shifted positions (PIE),
on tiny GQA and MHA models and (integration) the embedded model; and ``codedec.forward`` uses it.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from codedec import fastpath, q8kernel
from codedec import forward as fwd
from codedec.cache import KVCache

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf(model, kv, ids, positions, mask, keep):
    kwargs = {} if mask is None else {"attention_mask": mask}
    return model(input_ids=ids, position_ids=positions, past_key_values=kv, use_cache=True,
                 logits_to_keep=keep, **kwargs).logits


def _tree_mask(t: int, parents: list[int]) -> torch.Tensor:
    """Additive mask [1, 1, P, t + P] of a draft tree after t cached positions (as tree_forward)."""
    from codedec.draft_tree import ancestors

    visible = torch.ones(len(parents), t + len(parents), dtype=torch.bool)
    visible[:, t:] = ancestors(parents)
    return torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)[None, None]


def _calls(vocab: int, rng: random.Random):
    """(ids [1, P], positions as offsets from the cache length, tree parents or None, keep) per call."""
    def ids(n):
        return torch.tensor([[rng.randrange(vocab) for _ in range(n)]])

    return [
        (ids(9), list(range(9)), None, 1),  # prefill on an empty cache
        (ids(5), list(range(5)), None, 5),  # a chunk after cached positions, every row kept
        (ids(1), [0], None, 1),  # a decode step
        (ids(1), [0], None, 1),
        (ids(6), [0, 1, 1, 2, 2, 3], [-1, 0, 0, 1, 2, 4], 6),  # a draft tree (depth positions, mask)
        (ids(3), [40, 41, 42], None, 2),  # shifted positions (PIE re-encodes at moved positions)
    ]


def _compare(model, vocab: int, seed: int, tol: float = 0.0) -> None:
    """lean_forward against transformers' forward over a sequence of calls: bit for bit, or
    within ``tol`` (absolute, logits and cached keys/values) where codedec's fused layers
    (``q8kernel.layer_pre`` / ``layer_post``) sum in another order than torch's operators."""
    rng = random.Random(seed)

    def same(a, b) -> bool:
        return torch.equal(a, b) if tol == 0 else torch.allclose(a, b, rtol=0, atol=tol)
    ours, theirs = KVCache(model.config), KVCache(model.config)
    with torch.inference_mode():
        for ids, offsets, parents, keep in _calls(vocab, rng):
            t = len(ours)
            pos = torch.tensor([[t + o for o in offsets]])
            mask = None if parents is None else _tree_mask(t, parents)
            got = fastpath.lean_forward(model, ours.kv, ids, pos, mask, keep)
            want = _hf(model, theirs.kv, ids, pos, mask, keep)
            assert got.shape == want.shape == (1, keep, vocab)
            assert same(got, want), float((got - want).abs().max())
            ours.appended(ids[0].tolist())
            theirs.appended(ids[0].tolist())
            for a, b in zip(ours.kv.layers, theirs.kv.layers, strict=True):
                assert same(a.keys, b.keys) and same(a.values, b.values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [2, 4])  # GQA and MHA
def test_lean_forward_equals_transformers_tiny(make_tiny, kv_heads, dtype, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")  # what load_model sets on CPU
    model = copy.deepcopy(make_tiny(seed=kv_heads, num_key_value_heads=kv_heads).model).to(dtype)
    assert fastpath.supports(model)
    _compare(model, model.config.vocab_size, seed=kv_heads)


def test_codedec_forward_takes_the_lean_path(tiny, monkeypatch):
    """``forward``'s functions go through ``lean_forward`` for a supported model, and through
    transformers' forward when ``$CODEDEC_FASTPATH=0`` — with the same logits."""
    calls = []
    real = fastpath.lean_forward

    def counting(*args, **kwargs):
        calls.append(args[2].shape[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(fastpath, "lean_forward", counting)
    fwd.use_fastpath(tiny.model, None)
    cache = KVCache(tiny.model.config)
    lean = [fwd.prefill(tiny.model, cache, list(range(3, 20))), fwd.decode_one(tiny.model, cache, 7)]
    assert calls == [17, 1]

    monkeypatch.setenv("CODEDEC_FASTPATH", "0")
    fwd.use_fastpath(tiny.model, None)
    try:
        assert not fastpath.supports(tiny.model)
        cache = KVCache(tiny.model.config)
        plain = [fwd.prefill(tiny.model, cache, list(range(3, 20))), fwd.decode_one(tiny.model, cache, 7)]
        assert calls == [17, 1]  # not called again
    finally:
        fwd.use_fastpath(tiny.model, None)
    for a, b in zip(lean, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_unsupported_models_keep_transformers_forward(scripted, tiny):
    loaded, _ = scripted(["a"])
    assert not fastpath.supports(loaded.model)  # not a LlamaForCausalLM
    tiny.model.train()
    try:
        assert not fastpath.supports(tiny.model)  # training mode
    finally:
        tiny.model.eval()


def test_lean_forward_equals_transformers_int4(make_tiny, monkeypatch):
    """A tiny model whose projections lie on a 4-bit grid, quantized (``codedec.quant``): decode
    rows take the joint q|k|v and gate|up int4 products, and still match transformers' forward
    over the separate layers bit for bit (prefill rows over INT4_MAX_ROWS take the separate
    layers' fp32 weights)."""
    from test_quant import grid_weight
    from torch import nn

    from codedec.quant import Int4Linear, quantize_int4

    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    model = copy.deepcopy(make_tiny(seed=5).model)
    with torch.no_grad():
        for i, mod in enumerate(m for m in model.model.layers.modules() if type(m) is nn.Linear):
            mod.weight.copy_(grid_weight(*mod.weight.shape, seed=i)[0])
    report = quantize_int4(model)
    assert len(report.int4) == 7 * len(model.model.layers)
    fastpath._JOINT.pop(model, None)
    monkeypatch.setattr(q8kernel, "FUSED", False)  # op by op around the products: bit for bit
    _compare(model, model.config.vocab_size, seed=5)
    joint = fastpath._JOINT[model]
    assert all(isinstance(j, Int4Linear) and j.weight is None for j in joint.qkv + joint.gate_up)
    assert all(plan is not None for plan in joint.plans)  # decode rows took the direct int4 pass
    fastpath.use_int4_plans(model, False)  # the generic loop through the modules: exact as well
    assert all(plan is None for plan in fastpath._JOINT[model].plans)
    _compare(model, model.config.vocab_size, seed=6)
    fastpath.use_int4_plans(model, True)
    if q8kernel.available():  # whole layers in two C++ calls: the same up to summation order
        monkeypatch.setattr(q8kernel, "FUSED", True)
        calls = []
        real = q8kernel.layer_post
        monkeypatch.setattr(q8kernel, "layer_post", lambda *a: calls.append(1) or real(*a))
        _compare(model, model.config.vocab_size, seed=7, tol=1e-5)
        assert len(calls) >= len(model.model.layers)  # decode rows took the fused layers
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.packed.data_ptr() != attn.q_proj.packed.data_ptr()
    assert attn.q_proj.packed.data_ptr() == joint.qkv[0].packed.data_ptr()  # the parts are views: no copy


@pytest.mark.integration
def test_lean_forward_equals_transformers_smollm2(smollm2):
    _compare(smollm2.model, smollm2.model.config.vocab_size, seed=0)
