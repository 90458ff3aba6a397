"""SuffixDecoding: drafts from suffix indexes, verified losslessly in one tree forward.

- the index finds the longest context suffix and proposes what followed it (path or tree, with
  empirical probabilities), never across sequences, sized by the match, evicting the oldest;
- greedy speculation is plain greedy token for token on hundreds of random prompts (two tiny
  models, with stops, single-line mode and max lengths), with drafts that are accepted in full,
  in part and not at all — and it does speculate (fewer forwards than tokens);
- the same with the processor chain (healing, rpg, grammar) on code prompts;
- a partly rejected draft leaves the state exactly as a plain advance over the accepted tokens;
- sampled acceptance keeps the target distribution (a statistical test with a fixed seed);
- the service feeds the previous completion after an edit into the draft.
"""

from __future__ import annotations

import random

import pytest
import torch
from test_state import make_state, run, same, snapshot

from codedec.cache import KVCache
from codedec.engine import Engine
from codedec.forward import prefill
from codedec.prepare import prepare
from codedec.sampling import SamplingParams
from codedec.speculate.references import Previous, edit_span, reference_ids, reference_texts
from codedec.speculate.suffix_tree import DraftConfig, Drafter, GlobalStore, SuffixIndex
from codedec.speculate.verify import Governor, SpecConfig, SuffixStrategy, verify_rows
from codedec.strategy import PlainStrategy, make_strategy

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- the index

def index_of(*seqs):
    idx = SuffixIndex()
    for s in seqs:
        idx.add(s)
    return idx


def test_matches_give_every_occurrence_its_match_length():
    idx = index_of([1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 8, 3, 4, 7])
    starts, lengths = idx.matches([7, 2, 3, 4], max_depth=8)
    got = dict(zip(starts.tolist(), lengths.tolist(), strict=True))
    assert got == {4: 3, 9: 3, 13: 2}  # after "2 3 4" twice, after "8 3 4" (only "3 4" matches)
    starts, lengths = idx.matches([7, 2, 3, 4], max_depth=2)
    assert set(lengths.tolist()) == {2}


def test_matches_never_cross_a_sequence_boundary_and_need_a_continuation():
    idx = index_of([5, 6], [7, 1, 2])
    starts, lengths = idx.matches([6, 7, 1], max_depth=8)
    assert dict(zip(starts.tolist(), lengths.tolist(), strict=True)) == {5: 2}  # "7 1", not "6 | 7 1"
    assert len(idx.matches([3, 2], 8)[0]) == 0  # the last token of a sequence has nothing after it


def test_tree_draft_has_empirical_probabilities_and_distinct_siblings():
    idx = index_of([1, 2, 10, 11, 1, 2, 10, 12, 1, 2, 20, 21, 1, 2, 10, 11])
    cfg = DraftConfig(alpha=4.0, max_tokens=16, min_prob=0.2)
    draft = idx.propose([0, 1, 2], cfg)
    nodes = {}
    for tok, par, p in zip(draft.tokens, draft.parents, draft.probs, strict=True):
        path = (nodes[par][0] if par >= 0 else ()) + (tok,)
        nodes[len(nodes)] = (path, p)
    probs = {path: round(p, 3) for path, p in nodes.values()}
    # four occurrences of "1 2": followed by 10 11, 10 12, 20 21, 10 11
    assert probs[(10,)] == pytest.approx(3 / 4, abs=1e-3)
    assert probs[(20,)] == pytest.approx(1 / 4, abs=1e-3)
    assert probs[(10, 11)] == pytest.approx(2 / 4, abs=1e-3)
    assert draft.match == 2 and draft.score == pytest.approx(sum(draft.probs))
    for i, p in enumerate(draft.parents):  # topological, most probable first, distinct siblings
        assert p < i
        assert p < 0 or draft.probs[p] >= draft.probs[i]
    sib = [(p, t) for p, t in zip(draft.parents, draft.tokens, strict=True)]
    assert len(set(sib)) == len(sib)
    path = idx.propose([0, 1, 2], DraftConfig(alpha=4.0, tree=False, min_prob=0.2))
    assert path.tokens[:1] == (10,) and all(p == i - 1 for i, p in enumerate(path.parents))


def test_draft_size_follows_the_match_length_and_min_prob():
    seq = list(range(100, 140))
    idx = index_of(seq, [7, 100, 101])
    one = idx.propose([5, 101], DraftConfig(alpha=1.0))  # match 1 -> 1 token deep
    assert one.tokens == (102,)
    three = idx.propose([100, 101, 102], DraftConfig(alpha=2.0, max_tokens=16))  # match 3 -> 6 deep
    assert three.tokens == tuple(range(103, 109))
    capped = idx.propose(seq[:30], DraftConfig(alpha=2.0, max_tokens=5))
    assert len(capped) == 5
    rare = index_of([1, 2, 3], [1, 2, 4], [1, 2, 4], [1, 2, 4], [1, 2, 4])
    assert 3 not in rare.propose([1, 2], DraftConfig(min_prob=0.3)).tokens
    assert 3 in rare.propose([1, 2], DraftConfig(min_prob=0.1)).tokens


def test_global_store_evicts_the_oldest_completions():
    store = GlobalStore(max_tokens=10)
    store.add([1, 2, 3, 4])
    store.add([5, 6, 7, 8])
    assert store.index.propose([1, 2], DraftConfig()).tokens[:1] == (3,)
    store.add([9, 10, 11, 12])  # 12 tokens > 10: the first completion goes
    assert len(store) == 8
    assert len(store.index.propose([1, 2], DraftConfig())) == 0
    assert store.index.propose([9, 10], DraftConfig()).tokens[:1] == (11,)


def test_drafter_follows_generated_tokens_and_rollbacks():
    d = Drafter([1, 2, 3, 4, 5, 1, 2], references=[[8, 9, 30, 31]], config=DraftConfig(alpha=2.0))
    assert d.propose([]).tokens[:3] == (3, 4, 5)
    assert d.propose([3, 4, 8, 9]).tokens[:2] == (30, 31)  # from the reference
    assert d.propose([3, 4, 8]).tokens[:1] == (9,)  # a rollback: the index is rebuilt
    store = GlobalStore()
    store.add([50, 51, 52, 53, 54, 55])
    d = Drafter([1, 50, 51, 52], store=store)
    assert d.propose([]).source == "global" and d.propose([]).tokens[:1] == (53,)


def test_governor_sizes_drafts_by_measured_cost():
    gov = Governor()
    gov.record_step(1, 100.0)
    for n in (2, 4, 8, 16):
        gov.record_step(n, 100.0 + 20.0 * (n - 1))  # 20 % per extra token
    chain = [0, 1, 2, 3]
    assert gov.choose([0.1, 0.1, 0.1], chain, 3, match=30) == 0  # an unlikely draft is not worth its cost
    assert gov.choose([1.0, 1.0, 1.0, 1.0], chain, 4, match=30) == 4  # a sure one from a long match is
    assert gov.choose([1.0, 1.0, 1.0, 1.0], chain, 4, match=1) < 4  # a one-token match is trusted less
    assert gov.choose([1.0, 1.0], chain, 2, match=30, root_known=True) == 2  # right after the prefill
    assert gov.choose([0.5], chain, 1, match=30, root_known=True) == 0  # the plain token costs nothing yet
    for _ in range(30):
        gov.record_draft([1.0, 1.0, 1.0, 1.0], 1, match=2)  # only the first token is ever accepted
    assert gov.calibration(0, 2) > 0.9 and gov.calibration(1, 2) < 0.15 and gov.calibration(9, 1) < 0.15
    assert gov.choose([1.0, 1.0, 1.0, 1.0], chain, 4, match=2) == 1  # worth one node, not four
    assert gov.choose([1.0, 1.0, 1.0, 1.0], chain, 4, match=30) == 4  # long matches learned apart


# ------------------------------------------------------------------------- greedy exactness

def generate(loaded, prompt, params, strategy):
    engine = Engine(loaded)
    steps = list(engine.generate(prompt, params, (), strategy, cache=KVCache(loaded.model.config)))
    return [t for s in steps for t in s.token_ids], steps[-1].finish_reason, steps[-1].metrics.forwards


def perturbed(ids, rng):
    """The plain output with one token changed somewhere: a draft accepted up to that point."""
    out = list(ids)
    if out:
        out[rng.randrange(len(out))] = rng.randrange(5, 500)
    return out


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_greedy_speculation_is_plain_greedy_on_random_prompts(make_tiny, kv_heads):
    loaded = make_tiny(seed=kv_heads, num_key_value_heads=kv_heads)
    vocab = loaded.model.config.vocab_size
    rng = random.Random(kv_heads)
    tokens = forwards = spec_steps = accepted = 0
    for trial in range(120):
        prompt = [rng.randrange(5, vocab) for _ in range(rng.randint(1, 48))]
        params = SamplingParams(max_new_tokens=rng.randint(1, 48), single_line=trial % 5 == 1,
                                stop_strings=("e",) if trial % 7 == 2 else ())
        want, why, _ = generate(loaded, prompt, params, PlainStrategy())
        refs = [] if trial % 3 == 0 else [want] if trial % 3 == 1 else [perturbed(want, rng)]
        strategy = SuffixStrategy(SpecConfig(adaptive=trial % 2 == 0), references=refs)
        got, got_why, fw = generate(loaded, prompt, params, strategy)
        assert (got, got_why) == (want, why), f"trial {trial}: speculation changed the output"
        tokens += len(got)
        forwards += fw
        spec_steps += strategy.stats["spec_steps"]
        accepted += strategy.stats["accepted"]
    assert spec_steps > 100 and accepted > tokens / 3  # it does speculate, and drafts are accepted
    assert forwards < 0.75 * tokens


def code_generate(loaded, strategy, decoding, temperature=0.0):
    engine = Engine(loaded)
    prefix = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    prepared = prepare(engine, prefix, "\n", max_tokens=40, decoding=decoding, temperature=temperature, seed=3)
    steps = list(engine.generate(prepared.prompt_ids, prepared.params, prepared.chain, strategy))
    return [t for s in steps for t in s.token_ids], steps[-1].metrics.forwards


@pytest.mark.parametrize("decoding", ["", "rpg,min-tokens,grammar"])
def test_greedy_speculation_with_constraints_is_constrained_greedy(make_tiny, decoding):
    loaded = make_tiny(seed=11)
    want, plain_forwards = code_generate(loaded, PlainStrategy(), decoding)
    rng = random.Random(3)
    for refs in ([want], [perturbed(want, rng)], [perturbed(want, rng), want[5:]], []):
        strategy = SuffixStrategy(SpecConfig(adaptive=False), references=refs)
        got, forwards = code_generate(loaded, strategy, decoding)
        assert got == want
        if refs == [want]:
            assert forwards < plain_forwards


def test_the_first_token_is_shown_before_any_draft_is_verified(make_tiny):
    """Right after the prefill the first token costs no forward: it is yielded alone, before the
    first tree forward, even when a draft for it and more is ready (the editor's time to first
    token is the prefill's)."""
    loaded = make_tiny(seed=11)
    want, _ = code_generate(loaded, PlainStrategy(), "")
    engine = Engine(loaded)
    prefix = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    prepared = prepare(engine, prefix, "\n", max_tokens=40, seed=3)
    tail = list(prepared.prompt_ids[-8:])  # the prompt's end, then the answer: a draft from the start
    strategy = SuffixStrategy(SpecConfig(adaptive=False), references=[tail + want])
    steps = engine.generate(prepared.prompt_ids, prepared.params, prepared.chain, strategy)
    first = next(steps)
    assert first.token_ids == want[:1] and first.metrics.forwards == 1  # the prefill's forward only
    rest = list(steps)
    assert first.token_ids + [t for s in rest for t in s.token_ids] == want
    assert strategy.stats["spec_steps"] >= 1 and rest[-1].metrics.forwards < len(want)


def test_a_partly_rejected_draft_leaves_no_trace(tiny):
    probe = make_state(tiny, temperature=0.0)
    want = run(probe, 12)
    a = make_state(tiny, temperature=0.0)
    b = make_state(tiny, temperature=0.0)
    run(a, 2)
    run(b, 2)
    wrong = list(want)
    wrong[6] = (wrong[6] + 1) % 400 + 5  # the draft agrees for tokens 2..5, then goes astray
    strategy = SuffixStrategy(SpecConfig(adaptive=False), references=[wrong])
    strategy.step(a)  # draft: want[2:] as far as it matches; accepted until index 6, plus the bonus
    assert strategy.stats["spec_steps"] == 1 and strategy.stats["accepted"] >= 3
    got = a.ids[2:]
    b.advance(got, a.uncertainty[2:])
    assert a.ids == want[: len(a.ids)]
    sa, sb = snapshot(a), snapshot(b)
    assert same(sa[:5] + sa[6:], sb[:5] + sb[6:])  # ids, text, detokenizer, stopper, finish, uncertainty
    for state, snap in ((a, sa), (b, sb)):  # the cache: a prefix of the tokens (no rejected node left)
        assert snap[5] == (state.prompt_ids + state.ids)[: len(snap[5])]
    fresh = KVCache(tiny.model.config)
    prefill(tiny.model, fresh, a.cache.tokens)
    for (ka, va), (kf, vf) in zip(a.cache.layer_tensors(), fresh.layer_tensors(), strict=True):
        torch.testing.assert_close(ka, kf, rtol=1e-4, atol=1e-4)  # no rejected node's key is left
        torch.testing.assert_close(va, vf, rtol=1e-4, atol=1e-4)
    assert torch.allclose(a.feed(), b.feed(), atol=1e-4)
    assert run(a, 10) == run(b, 10)


# -------------------------------------------------------------------------- sampled rule

def test_sampled_acceptance_keeps_the_target_distribution():
    """Draws through ``verify_rows`` with a branching draft: the first token is distributed as
    row 0, and the second token after an accepted node as that node's row (total variation
    within sampling noise over 20,000 fixed-seed draws)."""
    V = 8
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, V, generator=gen) * 1.5  # rows: root, then after each of 5 nodes
    tokens = [2, 5, 7, 1, 3]  # root children 2, 5, 7; below 2: 1 and 3
    parents = [-1, -1, -1, 0, 0]
    params = SamplingParams(temperature=1.0, seed=0)
    probs = torch.softmax(logits, dim=-1)
    first = torch.zeros(V)
    second = torch.zeros(V)
    rng = torch.Generator().manual_seed(1)
    n = 20000
    for _ in range(n):
        path, last, bonus = verify_rows(logits, tokens, parents, params, rng, backend="torch")
        out = [tokens[i] for i in path] + [bonus]
        first[out[0]] += 1
        if out[0] == 2:  # node 0 accepted: the next token follows row 1
            second[out[1]] += 1
    tv = 0.5 * (first / n - probs[0]).abs().sum()
    assert tv < 0.02, f"first token off the target distribution: TV {tv:.4f}"
    tv2 = 0.5 * (second / second.sum() - probs[1]).abs().sum()
    assert tv2 < 0.03, f"second token off the target distribution: TV {tv2:.4f}"
    # the same check with the acceptance rule broken (rejected siblings not removed) fails: the
    # bonus would double-count the first child's token
    bad = torch.zeros(V)
    for _ in range(4000):
        u = torch.rand(3, generator=rng)
        kid = next((i for i in range(3) if u[i] < probs[0, tokens[i]]), None)  # no residual: biased
        bad[tokens[kid] if kid is not None else int(torch.multinomial(probs[0], 1, generator=rng))] += 1
    assert 0.5 * (bad / 4000 - probs[0]).abs().sum() > 0.05


def test_sampled_speculation_is_reproducible_and_valid(tiny):
    runs = [code_generate(tiny, SuffixStrategy(SpecConfig(adaptive=False)), "rpg,grammar", temperature=0.8)[0]
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


# ----------------------------------------------------------------------------- references

def test_edit_span_and_reference_texts():
    assert edit_span("abcXYZdef", "abcQdef") == (3, 6, 4)
    assert edit_span("same", "same") == (4, 4, 4)
    prev = Previous("def f():\n    return old_value\n\n", "x = 1\n", (5, 6))
    texts = reference_texts("def f():\n    return \n\n", "x = 1\n", prev)
    assert texts[0] == "x = 1\n" and "old_value" in texts[1]
    assert reference_texts("a", "b", None, with_suffix=False) == []


def test_service_drafts_from_the_previous_completion_after_an_edit(tiny):
    from codedec.service import CompletionRequest, CompletionService

    engine = Engine(tiny)
    service = CompletionService(engine=engine, threads=1)
    try:
        prefix, suffix = "def push(self, x):\n    ", "\n\nclass Queue:\n    pass\n"
        base = dict(doc="file:///a.py", max_tokens=32, postprocess=False, pie=False)
        first = service.complete(CompletionRequest(id="1", prefix=prefix, suffix=suffix, **base))
        assert first.token_ids
        edited = "import os\n" + prefix  # an edit above the cursor
        plain = service.complete(CompletionRequest(id="2", prefix=edited, suffix=suffix, doc="file:///b.py",
                                                   max_tokens=32, postprocess=False, pie=False))
        spec = service.complete(CompletionRequest(id="3", prefix=edited, suffix=suffix, strategy="suffix", **base))
        assert spec.token_ids == plain.token_ids
        st = spec.stats["strategy_stats"]
        assert st["accepted"] > 0 and spec.stats["forwards"] < len(spec.token_ids)
    finally:
        service.close()
    ids = reference_ids(tiny.tokenizer, "a", "b = 2\n", Previous("a", "c", (9, 9), (4, 5)))
    assert ids[-1] == [4, 5, 9, 9] and len(ids) == 3


def test_reference_ids_tokenize_an_unchanged_suffix_once(tiny):
    """Typing at the cursor leaves the text after it unchanged: its ids come from the memo (the
    same ids, a fresh list), a changed suffix is tokenized again, and the memo stays bounded."""
    from codedec.speculate import references

    calls = []

    class Counting:
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def encode(self, text, **kw):
            calls.append(text)
            return self.tokenizer.encode(text, **kw)

    tok = Counting(tiny.tokenizer)
    first = reference_ids(tok, "def f(", "x = 1\n", None)
    first[0].append(-1)  # the caller may change its list: the memo keeps its own
    again = reference_ids(tok, "def f(a", "x = 1\n", None)
    assert again == [tiny.tokenizer.encode("x = 1\n", add_special_tokens=False)] and len(calls) == 1
    reference_ids(tok, "def f(a", "y = 2\n", None)
    assert calls == ["x = 1\n", "y = 2\n"]
    for i in range(references.ENCODED_MEMO + 3):
        reference_ids(tok, "", f"z = {i}\n", None)
    assert len(references._ENCODED[tok]) == references.ENCODED_MEMO


def test_suffix_is_a_strategy_everywhere():
    assert make_strategy("suffix").name == "suffix"
    from codedec.settings import ServerSettings

    assert ServerSettings.from_options({"decoding": "grammar,suffix"}).strategy == "suffix"
