"""PIE edit-aware reuse: exact re-rotation, exact prefix and edit, measured suffix staleness, fallbacks.

(a) Rotating a cache computed at positions p by Δ equals the cache computed for the same tokens at
    p + Δ, every layer, for GQA/MHA Llama, partial rotary (StableLM), interleaved + partial (GPT-J)
    and YaRN (attention scaling folded into cos/sin cancels) — torch twin and Triton interpreter.
(b) After a real edit the prefix and the edited tokens are exact, the suffix is exact in layer 0
    (position only) and stale above; the next-token logits are *reported* against a full
    recompute (``pytest -rP`` shows them), never asserted beyond what is guaranteed.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPTJConfig,
    GPTJForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    StableLmConfig,
    StableLmForCausalLM,
)

from codedec.cache import KVCache
from codedec.engine import Engine
from codedec.forward import prefill
from codedec.pie import EditSpan, apply_edit, find_edit, rotary_spec, shift_positions
from codedec.sampling import SamplingParams


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (see ``one_thread`` in tests/conftest.py)."""


@pytest.fixture()
def triton_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton through its interpreter for this test only (kernels are JIT-wrapped per mode)."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _rope(kind="default", layout="rotate_half", partial=1.0, theta=10000.0, factor=1.0) -> dict:
    return {"rope": {"kind": kind, "layout": layout, "partial_rotary_factor": partial, "factor": factor, "theta": theta}}


def _small(cls, config, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).eval()


def _models(make_tiny):
    """(name, model, preset) for every RoPE variant the kernel must honour."""
    gqa, mha = make_tiny(1, num_key_value_heads=2), make_tiny(2, num_key_value_heads=4)
    common = dict(vocab_size=96, max_position_embeddings=512, num_hidden_layers=2, num_attention_heads=4)
    stablelm = StableLmConfig(hidden_size=64, intermediate_size=96, num_key_value_heads=2, partial_rotary_factor=0.5, **common)
    gptj = GPTJConfig(vocab_size=96, n_positions=512, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, bos_token_id=0, eos_token_id=0)
    yarn = LlamaConfig(hidden_size=64, intermediate_size=96, num_key_value_heads=2, **common,
                       rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                        "original_max_position_embeddings": 128})
    return [
        ("llama-gqa", gqa.model, gqa.preset),
        ("llama-mha", mha.model, mha.preset),
        ("stablelm-partial", _small(StableLmForCausalLM, stablelm), _rope(partial=0.5)),
        ("gptj-interleaved-partial", _small(GPTJForCausalLM, gptj), _rope(layout="interleaved")),
        ("llama-yarn", _small(LlamaForCausalLM, yarn), _rope("yarn", factor=4.0)),
    ]


@torch.inference_mode()
def _cache_at(model, ids: list[int], first_pos: int) -> KVCache:
    """A cache of ``ids`` encoded at positions first_pos, first_pos + 1, ... (one forward)."""
    cache = KVCache(model.config)
    pos = torch.arange(first_pos, first_pos + len(ids)).unsqueeze(0)
    model(input_ids=torch.tensor([ids]), position_ids=pos, past_key_values=cache.kv, use_cache=True)
    cache.tokens = list(ids)
    return cache


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_rerotated_cache_equals_cache_at_shifted_positions(make_tiny, triton_interpret, backend):
    ids = [int(i) for i in torch.randint(3, 90, (23,), generator=torch.Generator().manual_seed(0))]
    for name, model, preset in _models(make_tiny):
        spec = rotary_spec(model, preset)
        assert spec is not None, name
        for delta in (41, -7):
            moved = _cache_at(model, ids, 10)
            shift_positions(moved, 0, len(ids), delta, spec, backend=backend)
            fresh = _cache_at(model, ids, 10 + delta)
            for layer, ((k, v), (k0, v0)) in enumerate(zip(moved.layer_tensors(), fresh.layer_tensors(), strict=True)):
                torch.testing.assert_close(k, k0, rtol=1e-4, atol=1e-5, msg=f"{name} Δ={delta} layer {layer} keys")
                torch.testing.assert_close(v, v0, rtol=1e-4, atol=1e-5, msg=f"{name} Δ={delta} layer {layer} values")


def test_a_per_token_delta_is_exact_in_layer_0(tiny):
    """Layer-0 keys depend only on (token, position): any per-token Δ must match a fresh forward."""
    ids = list(range(40, 61))
    delta = torch.arange(len(ids)) * 3 - 5  # positions 10 + t -> 5 + 4t: a non-uniform move
    moved = _cache_at(tiny.model, ids, 10)
    shift_positions(moved, 0, len(ids), delta, rotary_spec(tiny.model, tiny.preset))
    fresh = KVCache(tiny.model.config)
    with torch.inference_mode():
        tiny.model(input_ids=torch.tensor([ids]), position_ids=(torch.arange(len(ids)) * 4 + 5).unsqueeze(0),
                   past_key_values=fresh.kv, use_cache=True)
    torch.testing.assert_close(moved.layer_tensors()[0][0], fresh.layer_tensors()[0][0], rtol=1e-4, atol=1e-5)


def _edit_case(tok):
    prefix = tok.encode("import os\nimport sys\n\n\ndef fibonacci(n: int) -> list[int]:\n", add_special_tokens=False)
    old_mid = tok.encode('    """Return the first n numbers."""\n', add_special_tokens=False)
    new_mid = tok.encode("    result, a, b = [], 0, 1\n    # first n\n", add_special_tokens=False)
    suffix = tok.encode("    for _ in range(n):\n        result.append(a)\n        a, b = b, a + b\n    return", add_special_tokens=False)
    generated = tok.encode(" result\n\n\nclass Stack:", add_special_tokens=False)  # the previous completion
    return prefix + old_mid + suffix, generated, prefix + new_mid + suffix


def _report(got: torch.Tensor, want: torch.Tensor) -> str:
    same = "same" if got.argmax() == want.argmax() else "DIFFERS"
    return f"max|Δlogit|={(got - want).abs().max():.4f} argmax {same}"


def test_b_real_edit_prefix_and_edit_exact_suffix_positional(tiny, make_tiny):
    for loaded in (tiny, make_tiny(3, num_key_value_heads=4)):
        model, tok = loaded.model, loaded.tokenizer
        old, generated, new = _edit_case(tok)
        cache = KVCache(model.config)
        prefill(model, cache, old + generated)
        span = find_edit(cache.tokens, new)
        assert span is not None and span.old_len == len(old)  # the generated tail is not part of the suffix
        result = apply_edit(model, cache, new, loaded.preset)
        assert result.fallback_reason is None and result.delta == span.delta != 0
        assert cache.tokens == new[:-1] and len(cache) == len(new) - 1
        assert result.kept_prefix + result.encoded + result.rotated == len(new) - 1

        full = KVCache(model.config)
        want_logits = prefill(model, full, new)
        s, e = span.start, span.new_end
        for layer, ((k, v), (k0, v0)) in enumerate(zip(cache.layer_tensors(), full.layer_tensors(), strict=True)):
            assert torch.equal(k[:, :, :s], k0[:, :, :s]) and torch.equal(v[:, :, :s], v0[:, :, :s])  # kept as is
            torch.testing.assert_close(k[:, :, s:e], k0[:, :, s:e], rtol=1e-4, atol=1e-5)  # encoded after the prefix
            torch.testing.assert_close(v[:, :, s:e], v0[:, :, s:e], rtol=1e-4, atol=1e-5)
            if layer == 0:  # suffix: position exact, and layer 0 has no context to be stale about
                torch.testing.assert_close(k[:, :, e:], k0[:, :, e : len(new) - 1], rtol=1e-4, atol=1e-5)
        pie_logits = prefill(model, cache, new[-1:])

        naive = KVCache(model.config)
        prefill(model, naive, old + generated)
        assert apply_edit(model, naive, new, loaded.preset, rerotate=False).fallback_reason is None
        naive_logits = prefill(model, naive, new[-1:])

        print(f"\n[{loaded.source}] edit {span}: PIE {_report(pie_logits, want_logits)}; "
              f"naive shift {_report(naive_logits, want_logits)}")
        assert torch.isfinite(pie_logits).all()


def test_engine_reuses_the_whole_patched_cache(tiny):
    old, generated, new = _edit_case(tiny.tokenizer)
    engine = Engine(tiny)
    cache = engine.cache  # (an empty cache passed as cache= is falsy: generate would use engine.cache anyway)
    list(engine.generate(old, SamplingParams(max_new_tokens=4), cache=cache))  # cache = old + its completion
    result = apply_edit(tiny.model, cache, new, tiny.preset)
    assert result.fallback_reason is None and result.rotated > 0
    steps = list(engine.generate(new, SamplingParams(max_new_tokens=2), cache=cache))
    assert steps[-1].metrics.reused_tokens == len(new) - 1


def test_only_the_cache_touches_layer_tensors():
    """PIE asks the cache for ranges (segment / extend / rerotate); cache.py never imports pie."""
    import ast
    import inspect

    import codedec.cache
    import codedec.pie

    pie_src = inspect.getsource(codedec.pie)
    assert ".layers" not in pie_src and ".kv." not in pie_src and "layer.keys" not in pie_src
    imported = {n.module for n in ast.walk(ast.parse(inspect.getsource(codedec.cache)))
                if isinstance(n, ast.ImportFrom)}
    assert "codedec.pie" not in imported


def test_edit_at_the_start_with_nothing_inserted(tiny):
    """A pure deletion at position 0: empty prefix, nothing encoded, the whole rest moved left."""
    model = tiny.model
    body = list(range(40, 70))
    cache = KVCache(model.config)
    prefill(model, cache, [7, 8, 9] + body)
    result = apply_edit(model, cache, body, tiny.preset)
    assert (result.kept_prefix, result.encoded, result.rotated, result.delta) == (0, 0, len(body) - 1, -3)
    full = KVCache(model.config)
    prefill(model, full, body)
    torch.testing.assert_close(cache.layer_tensors()[0][0], full.layer_tensors()[0][0][:, :, :-1], rtol=1e-4, atol=1e-5)


def test_fallbacks_leave_the_common_prefix(tiny):
    old, generated, new = _edit_case(tiny.tokenizer)
    model = tiny.model
    span = find_edit(old, new)
    for preset, kwargs, reason in [
        (_rope("dynamic", factor=2.0), {}, "not position-linear"),
        (_rope("longrope"), {}, "not position-linear"),
        (tiny.preset, {"max_edit_fraction": 0.01}, "edit of"),
    ]:
        cache = KVCache(model.config)
        prefill(model, cache, old + generated)
        result = apply_edit(model, cache, new, preset, **kwargs)
        assert result.fallback_reason is not None and reason in result.fallback_reason
        assert (result.encoded, result.rotated) == (0, 0)
        assert cache.tokens == new[: span.start] and result.kept_prefix == span.start


def test_nothing_to_move_is_plain_prefix_reuse(tiny):
    model = tiny.model
    cache = KVCache(model.config)
    prefill(model, cache, list(range(40, 80)))
    result = apply_edit(model, cache, list(range(40, 60)) + [5, 6, 7], tiny.preset)  # typed at the end
    assert result == apply_edit(model, cache, list(range(40, 60)) + [5, 6, 7], tiny.preset)
    assert (result.kept_prefix, result.rotated, result.fallback_reason) == (20, 0, None) and len(cache) == 20
    result = apply_edit(model, cache, list(range(40, 55)), tiny.preset)  # asked again earlier: a prefix of the cache
    assert result.kept_prefix == 14 and len(cache) == 14


@pytest.mark.parametrize(
    "old, new, want",
    [
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 9, 9, 3, 4, 5, 6, 7, 8, 9], EditSpan(2, 2, 4, 9)),  # insert
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 6, 7, 8, 9], EditSpan(1, 4, 1, 9)),  # delete
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 0, 4, 5, 6, 7, 8, 9], EditSpan(2, 3, 3, 9)),  # replace
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51], [1, 0, 4, 5, 6, 7, 8, 9], EditSpan(1, 3, 2, 9)),  # + generated tail
        ([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], None),  # nothing after the prefix
        ([1, 2, 3, 4, 5, 6], [9, 9, 9, 9, 9], None),  # no shared suffix
    ],
)
def test_find_edit(old, new, want):
    assert find_edit(old, new, min_anchor=3) == want


def test_find_edit_prefers_the_longest_suffix_then_the_latest():
    old = [1, 2, 3, 7, 8, 9, 4, 7, 8, 9, 5, 7, 8, 9]  # the anchor [7, 8, 9] occurs three times
    new = [1, 2, 6, 4, 7, 8, 9]
    assert find_edit(old, new, min_anchor=3) == EditSpan(2, 6, 3, 10)  # [4, 7, 8, 9] is the longest
    assert find_edit([1, 2, 3, 7, 8, 9, 0, 7, 8, 9], [1, 2, 6, 7, 8, 9], min_anchor=3) == EditSpan(2, 7, 3, 10)


def test_misuse(tiny):
    cache = KVCache(tiny.model.config)
    with pytest.raises(ValueError):
        apply_edit(tiny.model, cache, [], tiny.preset)
    with pytest.raises(ValueError):
        apply_edit(tiny.model, cache, [1, 2], tiny.preset, max_edit_fraction=1.5)
    with pytest.raises(ValueError):
        shift_positions(cache, 0, 1, 1, rotary_spec(tiny.model, tiny.preset))


@pytest.mark.integration
def test_smollm2_real_edit_report(smollm2):
    """The embedded model on a real code edit: PIE and the naive shift against a full recompute."""
    tok, model = smollm2.tokenizer, smollm2.model
    old, generated, new = _edit_case(tok)
    want = prefill(model, KVCache(model.config), new)
    p_want = want.softmax(-1)
    report = []
    for label, rerotate in (("PIE", True), ("naive shift", False)):
        cache = KVCache(model.config)
        prefill(model, cache, old + generated)
        result = apply_edit(model, cache, new, smollm2.preset, rerotate=rerotate)
        assert result.fallback_reason is None and cache.tokens == new[:-1]
        got = prefill(model, cache, new[-1:])
        assert torch.isfinite(got).all()
        kl = float((p_want * (p_want.log() - got.log_softmax(-1))).sum())
        report.append(f"{label}: max|Δlogit|={(got - want).abs().max():.3f} KL={kl:.4f} "
                      f"argmax {'same' if got.argmax() == want.argmax() else 'DIFFERS'}")
    print(f"\nsmollm2 edit {result.span}: " + "; ".join(report))
