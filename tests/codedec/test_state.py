"""``DecodeState``: fork / rollback of the whole state leave no trace in any part — the KV cache,
every processor, the detokenizer (held-back bytes too), the stopper, the random generator."""

from __future__ import annotations

import pytest
import torch

from codedec.cache import KVCache
from codedec.detokenize import IncrementalDetokenizer
from codedec.engine import Engine
from codedec.prepare import prepare
from codedec.processors import ProcessorChain
from codedec.sampling import Rng, SamplingParams
from codedec.state import DecodeState
from codedec.stopping import TextStopper
from codedec.strategy import PlainStrategy
from codedec.vocab import vocab_for

pytestmark = pytest.mark.usefixtures("one_thread")
PREFIX = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
DECODING = "rpg,min-tokens,no-fences,grammar"



def make_state(loaded, temperature=1.0, max_tokens=40, decoding=DECODING) -> DecodeState:
    prepared = prepare(Engine(loaded), PREFIX, "\n", max_tokens=max_tokens, decoding=decoding,
                       temperature=temperature, seed=5, stop_strings=("<END>",))
    state = DecodeState(loaded.model, KVCache(loaded.model.config), prepared.prompt_ids, prepared.params,
                        prepared.chain, vocab_for(loaded.tokenizer), loaded.stop_token_ids)
    state.feed()
    return state


def run(state: DecodeState, steps: int) -> list[int]:
    before = len(state.ids)
    strategy = PlainStrategy()
    for _ in range(steps):
        if state.finish_reason is not None:
            break
        strategy.step(state)
    return state.ids[before:]


def snapshot(state: DecodeState):
    return (list(state.ids), state.text, state.detok.text, state.detok._pending, state.safe_len,
            list(state.cache.tokens), state.finish_reason,
            None if state.rng is None else state.rng.torch.get_state().clone(), list(state.uncertainty))


def same(a, b) -> bool:
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rollback_leaves_no_trace(tiny, temperature):
    state = make_state(tiny, temperature)
    run(state, 6)
    before = snapshot(state)
    ahead = run(state, 8)
    assert ahead, "the state must have moved for the test to mean anything"
    state.rollback(len(ahead))
    after = snapshot(state)
    assert same(before[:5], after[:5]) and after[6] == before[6]  # ids, text, detokenizer, stopper
    assert same(before[7:], after[7:])  # the random generator
    assert after[5] == before[5][: len(after[5])]  # the cache holds a prefix (the last token is re-fed)
    assert run(state, 8) == ahead  # the same continuation: processors, rng, cache as before


def test_fork_is_independent_and_continues_identically(tiny):
    state = make_state(tiny)
    run(state, 5)
    fork = state.fork()
    before = snapshot(state)
    branch = run(fork, 10)
    assert branch and same(snapshot(state), before)  # the fork's steps left the original alone
    assert run(state, 10) == branch  # and both continue identically (rng forked with its state)


def test_fork_rollback_then_continue_equals_never_branching(tiny):
    reference = make_state(tiny)
    run(reference, 4)
    want = run(reference, 12)
    state = make_state(tiny)
    run(state, 4)
    look = state.fork()
    run(look, 6)
    look.rollback(6)
    assert run(look, 12) == want


def test_every_processor_is_rolled_back(tiny):
    """Each processor's scores after rollback equal its scores before the extra tokens."""
    state = make_state(tiny, temperature=0.0)
    run(state, 6)
    logits = state.feed().unsqueeze(0)
    rows = [proc(logits.clone()) for proc in state.chain.processors]
    extra = run(state, 6)
    state.rollback(len(extra))
    for proc, row in zip(state.chain.processors, rows, strict=True):
        torch.testing.assert_close(proc(logits.clone()), row, msg=type(proc).__name__)


def test_rollback_detects_a_processor_that_keeps_state(tiny):
    """The test above can fail: a processor whose rollback forgets nothing changes the scores."""
    from codedec.processors.base import StatefulProcessor

    class Forgetful(StatefulProcessor):
        def process_row(self, row):
            out = row.clone()
            out[5 + len(self.ids)] += 100.0
            return out

        def rollback(self, n):  # the bug: never forgets
            pass

    state = make_state(tiny, temperature=0.0, decoding="")
    state.chain = ProcessorChain([Forgetful()])
    run(state, 3)
    logits = state.feed().unsqueeze(0)
    row = state.chain(logits.clone())
    state.rollback(len(run(state, 4)))
    assert not torch.equal(state.chain(logits.clone()), row)


def _byte_ids(tiny):
    table = vocab_for(tiny.tokenizer).token_bytes
    return table.index(b"a"), table.index(b"\xc3"), table.index(b"\xa9")  # "a", then "é" in two bytes


def test_detokenizer_rollback_restores_held_back_bytes(tiny):
    a, e1, e2 = _byte_ids(tiny)
    detok = IncrementalDetokenizer(vocab_for(tiny.tokenizer))
    detok.push([a, e1, e2])
    assert detok.text == "aé"
    detok.rollback(1)  # back to "a" + a held-back lead byte
    assert detok.text == "a" and detok.final_text() == "a\ufffd"
    assert detok.push([e2]) == "é" and detok.text == "aé"  # not "a\ufffd" + "\ufffd"


def test_state_rollback_inside_a_character(tiny):
    a, e1, e2 = _byte_ids(tiny)
    state = make_state(tiny, decoding="")
    state.params = SamplingParams(max_new_tokens=10)
    state.advance([a, e1])
    assert state.text == "a"  # the lead byte is held back
    fork = state.fork()
    fork.advance([e2])
    assert fork.text == "aé" and state.text == "a"
    state.advance([e2, a])
    state.rollback(2)
    state.advance([e2])
    assert state.text == "aé" and state.take_text() == "aé"


def test_advance_reports_stops(tiny):
    tok = tiny.tokenizer
    state = make_state(tiny, decoding="")
    state.params = SamplingParams(max_new_tokens=30, stop_strings=("<END>",))
    state.stopper = TextStopper(("<END>",))
    ids = tok.encode("x = 1<END>junk", add_special_tokens=False)
    stop = state.advance(ids)
    assert stop is not None and state.finish_reason == "stop_string" and state.text == "x = 1"
    assert len(state.ids) == stop + 1  # the token that completed the stop string is accepted
    state.rollback(len(state.ids))
    assert state.finish_reason is None and state.text == ""
    eos = tiny.stop_token_ids[0]
    assert state.advance([ids[0], eos, ids[1]]) == 1 and state.finish_reason == "stop"
    assert state.ids == [ids[0]]  # a stop id is not accepted, nor anything after it
    with pytest.raises(ValueError, match="finished"):
        state.advance([ids[1]])


def test_length_and_cache_invariant(tiny):
    state = make_state(tiny, decoding="", max_tokens=3)
    assert state.advance([40, 41, 42, 43, 44]) is None and state.finish_reason == "length"
    assert state.ids == [40, 41, 42]
    assert len(state.cache) <= state.length


def test_stopper_rollback_and_fork():
    stopper = TextStopper(("<END>",))
    assert stopper.check("a <E").safe_len == 2
    fork = stopper.fork()
    assert fork.check("a <END>").stopped
    assert stopper.check("a <EX").safe_len == 5  # the fork's check left no trace
    stopper.rollback(1)
    assert stopper.check("a <END>").stopped
    with pytest.raises(ValueError):
        stopper.rollback(5)


def test_stopper_block_end():
    stopper = TextStopper(min_indent=4)
    assert stopper.check("    x = 1\n").safe_len == len("    x = 1")  # the next line may leave the block
    assert stopper.check("    x = 1\n    y").safe_len == len("    x = 1\n    y")
    check = stopper.check("    x = 1\n    y = 2\n\ndef g():")
    assert check.stopped and check.block_end and check.safe_len == len("    x = 1\n    y = 2\n")
    closer = TextStopper(min_indent=4)
    assert not closer.check("    f(\n        1,\n)\n    z").stopped  # a closing bracket does not end it
    first = TextStopper(min_indent=8)
    assert not first.check("x = 1").stopped  # the first line continues the cursor's line


def test_rng_rollback_and_fork():
    rng = Rng(7)
    draws = []
    for _ in range(3):
        draws.append(torch.rand(1, generator=rng.torch))
        rng.mark()
    fork = rng.fork()
    more = torch.rand(1, generator=fork.torch)
    rng.rollback(1)  # back to the state after the second draw
    assert torch.equal(torch.rand(1, generator=rng.torch), draws[2])
    rng.rollback(2)  # back to the seed
    assert torch.equal(torch.rand(1, generator=rng.torch), draws[0])
    reference = torch.Generator().manual_seed(7)
    fourth = [torch.rand(1, generator=reference) for _ in range(4)][-1]
    assert torch.equal(more, fourth)  # the fork went on from the state it was forked at



def test_reset_starts_the_generation_again(tiny):
    state = make_state(tiny)
    first = run(state, 10)
    state.reset()
    assert state.ids == [] and state.text == "" and state.finish_reason is None
    assert run(state, 10) == first  # same processors, generator and cache state as at the start
