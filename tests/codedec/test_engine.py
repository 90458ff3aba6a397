"""Engine loop: exactness against HF generate, prefix reuse, stops, budgets, cancellation."""

from __future__ import annotations

import threading

import pytest
import torch

from codedec.engine import Engine
from codedec.sampling import SamplingParams

PROMPT = "def add(a, b):\n    return a + b\n\n\ndef main():\n"


def run(engine, ids, **kw):
    steps = list(engine.generate(ids, SamplingParams(**kw)))
    return [t for s in steps for t in s.token_ids], "".join(s.text for s in steps), steps[-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kv_heads", [2, 4])  # GQA and MHA
def test_greedy_loop_equals_hf_generate(make_tiny, seed, kv_heads):
    loaded = make_tiny(seed=seed, num_key_value_heads=kv_heads)
    ids = loaded.tokenizer.encode(PROMPT, add_special_tokens=False)
    want = loaded.model.generate(
        torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0
    )[0, len(ids) :].tolist()
    got, _, last = run(Engine(loaded), ids, max_new_tokens=24, stop_token_ids=())
    # The engine stops at EOS, generate() was told not to: compare up to the engine's length.
    assert got == want[: len(got)]
    assert last.finish_reason == "length" or got == want[: len(got)]


def test_prefix_reuse_gives_identical_tokens_and_reports_reuse(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    warm = Engine(tiny)
    run(warm, ids[:-3] + [5, 6, 7], max_new_tokens=8)  # a different tail: partial overlap
    got, _, last = run(warm, ids, max_new_tokens=16)
    fresh, _, fresh_last = run(Engine(tiny), ids, max_new_tokens=16)
    assert got == fresh
    assert last.metrics.reused_tokens == len(ids) - 3
    assert fresh_last.metrics.reused_tokens == 0
    # A repeat of the same prompt re-encodes only its last token.
    _, _, again = run(warm, ids, max_new_tokens=4)
    assert again.metrics.reused_tokens == len(ids) - 1


def test_reused_prefix_extends_into_generated_tokens(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    engine = Engine(tiny)
    first, _, _ = run(engine, ids, max_new_tokens=10)
    # The user accepted the completion and asks again: everything but the last token is cached.
    _, _, last = run(engine, ids + first, max_new_tokens=4)
    assert last.metrics.reused_tokens == len(ids) + len(first) - 1


def test_seeded_sampling_is_reproducible(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    engine = Engine(tiny)
    a, _, _ = run(engine, ids, max_new_tokens=16, temperature=1.0, seed=7, stop_token_ids=())
    b, _, _ = run(engine, ids, max_new_tokens=16, temperature=1.0, seed=7)
    c, _, _ = run(engine, ids, max_new_tokens=16, temperature=1.0, seed=8)
    assert a == b
    assert a != c


def test_stop_token(scripted):
    loaded, ids = scripted([])
    eos = loaded.tokenizer.eos_token_id
    loaded, ids = scripted(["foo", [eos], "bar"])
    tokens, text, last = run(Engine(loaded), ids, max_new_tokens=20)
    assert text == "foo" and last.finish_reason == "stop"
    assert eos not in tokens


def test_stop_string_split_across_tokens_is_never_streamed(scripted):
    # "<E" + "ND>" — the stop string "<END>" straddles two tokens; "<E" must be held back.
    loaded, ids = scripted(["a = 1", "<E", "ND>", "junk"])
    steps = list(Engine(loaded).generate(ids, SamplingParams(max_new_tokens=30, stop_strings=("<END>",))))
    streamed = [s.text for s in steps]
    assert "".join(streamed) == "a = 1"
    assert all("<" not in s for s in streamed)
    assert steps[-1].finish_reason == "stop_string"


def test_held_back_prefix_of_stop_string_is_released_when_it_does_not_match(scripted):
    loaded, ids = scripted(["a <E", "X"])
    steps = list(Engine(loaded).generate(ids, SamplingParams(max_new_tokens=50, stop_strings=("<END>",))))
    assert "".join(s.text for s in steps) == "a <EX"


def test_single_line_mode_stops_at_newline(scripted):
    loaded, ids = scripted(["    return x", "\n", "y = 2"])
    _, text, last = run(Engine(loaded), ids, max_new_tokens=30, single_line=True)
    assert text == "    return x" and last.finish_reason == "newline"


def test_max_new_tokens(scripted):
    loaded, ids = scripted(["a"] * 10)
    tokens, text, last = run(Engine(loaded), ids, max_new_tokens=3)
    assert len(tokens) == 3 and text == "aaa" and last.finish_reason == "length"


def test_time_budget_stops_generation(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    tokens, _, last = run(Engine(tiny), ids, max_new_tokens=100_000, max_time_ms=30, stop_token_ids=())
    assert last.finish_reason in ("time", "stop")
    assert len(tokens) < 100_000


def test_cancel_stops_within_one_step(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    cancel = threading.Event()
    engine = Engine(tiny)
    seen = 0
    for step in engine.generate(ids, SamplingParams(max_new_tokens=1000), cancel=cancel):
        if step.finish_reason:
            break
        seen += 1
        if seen == 3:
            cancel.set()
    assert step.finish_reason == "cancelled"
    assert seen == 3  # no token after the one during which cancel was set


def test_cancel_before_start(tiny):
    cancel = threading.Event()
    cancel.set()
    steps = list(Engine(tiny).generate([1, 2, 3], SamplingParams(max_new_tokens=5), cancel=cancel))
    assert len(steps) == 1 and steps[0].finish_reason == "cancelled"


def test_empty_prompt_is_an_error(tiny):
    with pytest.raises(ValueError, match="empty"):
        next(Engine(tiny).generate([], SamplingParams()))


def test_the_engine_takes_token_ids_and_a_ready_chain_only():
    import inspect

    params = set(inspect.signature(Engine.generate).parameters)
    assert not params & {"decoding", "heal_text", "text_context"}


def test_one_generation_at_a_time(tiny):
    engine = Engine(tiny)
    first = engine.generate([1, 2, 3], SamplingParams(max_new_tokens=5))
    next(first)
    with pytest.raises(RuntimeError, match="already generating"):
        next(engine.generate([1, 2, 3], SamplingParams(max_new_tokens=5)))
    first.close()
    assert list(engine.generate([1, 2, 3], SamplingParams(max_new_tokens=2)))[-1].finish_reason


def test_abandoned_generation_leaves_cache_consistent(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    engine = Engine(tiny)
    gen = engine.generate(ids, SamplingParams(max_new_tokens=50))
    for _ in range(5):
        next(gen)
    gen.close()
    assert len(engine.cache) == engine.cache.kv.get_seq_length()
    got, _, _ = run(engine, ids, max_new_tokens=8)
    want, _, _ = run(Engine(tiny), ids, max_new_tokens=8)
    assert got == want


def test_healing_strips_the_healed_text(scripted):
    # The prompt was backed up by "ret"; the model re-creates it and continues.
    loaded, ids = scripted(["return", " x"])
    steps = list(Engine(loaded).generate(ids, SamplingParams(max_new_tokens=20, skip_text="ret")))
    assert "".join(s.text for s in steps) == "urn x"


def _file_ids(tiny, n_funcs=12):
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(n_funcs))
    return tiny.tokenizer.encode(text, add_special_tokens=False)


def test_edit_aware_reuse_after_a_mid_prompt_edit(tiny):
    ids = _file_ids(tiny)
    engine = Engine(tiny)
    run(engine, ids, max_new_tokens=3)
    mid = len(ids) // 2
    edited = ids[:mid] + [7, 8, 9] + ids[mid + 2 :]  # replace 2 tokens by 3 in the middle
    steps = list(engine.generate(edited, SamplingParams(max_new_tokens=3), edit_aware=True))
    m = steps[-1].metrics
    assert m.edit_fallback is None
    assert m.edit_rotated > 0 and 0 < m.edit_encoded < 10
    # Only the edited span and the last prompt token went through the model.
    assert m.encoded_tokens == m.edit_encoded + 1
    assert len(engine.cache) == len(edited) + 2  # prompt + generated tokens but the last


def test_edit_aware_is_exact_when_the_prompt_only_grows(tiny):
    ids = _file_ids(tiny)
    plain, pie = Engine(tiny), Engine(tiny)
    run(plain, ids[:-20], max_new_tokens=3)
    run(pie, ids[:-20], max_new_tokens=3)
    want, _, _ = run(plain, ids, max_new_tokens=8)
    steps = list(pie.generate(ids, SamplingParams(max_new_tokens=8), edit_aware=True))
    assert [t for s in steps for t in s.token_ids] == want
    assert steps[-1].metrics.edit_rotated == 0


def _counting(model, on_call):
    """Wrap ``model.forward`` so ``on_call(n)`` runs inside the n-th forward."""
    real = model.forward
    calls = []

    def forward(*args, **kwargs):
        calls.append(1)
        on_call(len(calls))
        return real(*args, **kwargs)

    model.forward = forward
    return calls


@pytest.mark.parametrize("why", ["cancelled", "time"])
def test_a_long_prefill_stops_within_one_chunk(make_tiny, why):
    """2k prompt tokens = 4 chunks of 512: a cancel (or a spent budget) during the first chunk
    ends the request before the second; the chunk already encoded stays cached for the next."""
    loaded = make_tiny(seed=0, num_key_value_heads=2)
    ids = [3 + (i * 7) % 500 for i in range(2048)]
    cancel = threading.Event()
    calls = _counting(loaded.model, lambda n: cancel.set() if n == 1 else None)
    engine = Engine(loaded)
    params = SamplingParams(max_new_tokens=4, max_time_ms=1e-3 if why == "time" else None)
    steps = list(engine.generate(ids, params, cancel=cancel if why == "cancelled" else None))
    assert len(calls) == 1 and steps[-1].finish_reason == why and steps[-1].token_ids == []
    assert len(engine.cache) == 512  # a consistent prefix: the next request reuses it
    again = list(engine.generate(ids, SamplingParams(max_new_tokens=2)))
    assert again[-1].metrics.reused_tokens == 512 and again[-1].finish_reason == "length"


def test_a_long_edit_is_cancellable(make_tiny):
    """PIE's encoding of a long edited span checks the cancel between its chunks too."""
    loaded = make_tiny(seed=0, num_key_value_heads=2)
    old = [3 + (i * 7) % 500 for i in range(2048)]
    new = old[:100] + [5] * 600 + old[100:]  # 600 new tokens: two chunks
    engine = Engine(loaded)
    list(engine.generate(old, SamplingParams(max_new_tokens=1)))
    cancel = threading.Event()
    calls = _counting(loaded.model, lambda n: cancel.set())
    steps = list(engine.generate(new, SamplingParams(max_new_tokens=2), cancel=cancel, edit_aware=True))
    assert steps[-1].finish_reason == "cancelled" and len(calls) == 1
    # The common prefix and the encoded chunk stay cached: the next request starts from them.
    assert engine.cache.tokens == new[: 100 + 512]
    again = list(engine.generate(new, SamplingParams(max_new_tokens=1)))
    assert again[-1].metrics.reused_tokens == 100 + 512


def test_forwards_are_counted(tiny):
    ids = tiny.tokenizer.encode(PROMPT, add_special_tokens=False)
    last = list(Engine(tiny).generate(ids, SamplingParams(max_new_tokens=6, stop_token_ids=())))[-1]
    # one prefill forward, then one per token but the last (its successor is never needed)
    assert last.metrics.new_tokens == 6 and last.metrics.forwards == 6


def test_a_cancelled_generation_sends_nothing_after_the_cancel(scripted):
    """Not even the held-back tail (here a newline the block-end check holds back): the VS Code
    protocol test saw a partial arrive after the cancel response."""
    loaded, ids = scripted(["    x = 1", "\n    ", "y", " = 2"])
    tok = loaded.tokenizer
    n = sum(len(tok.encode(p, add_special_tokens=False)) for p in ("    x = 1", "\n    "))
    cancel = threading.Event()
    gen = Engine(loaded).generate(ids, SamplingParams(max_new_tokens=20, block_indent=8), cancel=cancel)
    text = "".join(next(gen).text for _ in range(n))
    assert text == "    x = 1"  # "\n    " is held back: the next line may leave the block
    cancel.set()
    rest = list(gen)
    assert [s.text for s in rest] == [""] and rest[-1].finish_reason == "cancelled"
