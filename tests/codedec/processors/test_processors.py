"""Processor protocol: P-row semantics, chain life cycle, and the real processors."""

from __future__ import annotations

import pytest
import torch
from protocol_checks import assert_draft_rows_match_sequential

from codedec.decoding import ComponentContext, build_processors, parse_decoding
from codedec.processors import BannedTokens, HealingProcessor, MinNewTokens, ProcessorChain
from codedec.vocab import Vocab, vocab_for

NEG = float("-inf")


def finite(row):
    return set(torch.isfinite(row).nonzero().flatten().tolist())


def test_min_new_tokens_rows_follow_the_draft():
    proc = MinNewTokens(2, stop_ids=[0])
    rows = proc(torch.zeros(3, 5), draft=[3, 4])  # rows after 0, 1, 2 accepted ids
    assert [0 in finite(r) for r in rows] == [False, False, True]
    assert proc.ids == []  # scoring a draft does not advance


def test_rows_must_match_draft():
    with pytest.raises(ValueError, match="len\\(draft\\) \\+ 1"):
        MinNewTokens(1, [0])(torch.zeros(2, 5), draft=[])


def test_banned_tokens_containing():
    vocab = Vocab([b"", b"```", b"a``", b"x", b"``` py"], frozenset({0}))
    proc = BannedTokens.containing(vocab, b"```")
    assert finite(proc(torch.zeros(1, 5))[0]) == {0, 2, 3}


def test_healing_constrains_until_the_text_is_recreated():
    vocab = Vocab([b"", b"\n", b"\n    ", b"    ", b"x", b"\n\n"], frozenset({0}))
    proc = HealingProcessor(vocab, b"\n ")
    assert finite(proc(torch.zeros(1, 6))[0]) == {1, 2}  # covers "\n " or is a prefix of it
    proc.advance([1])  # "\n" produced; " " still pending
    assert finite(proc(torch.zeros(1, 6))[0]) == {3}
    proc.advance([3])
    assert finite(proc(torch.zeros(1, 6))[0]) == {0, 1, 2, 3, 4, 5}
    proc.rollback(2)
    assert proc.pending == b"\n "


def test_chain_fork_and_rollback_leave_no_trace(tiny):
    vocab = vocab_for(tiny.tokenizer)
    chain = ProcessorChain(
        build_processors(("min-tokens", "no-fences"), ComponentContext(vocab, tiny.stop_token_ids))
        + [HealingProcessor(vocab, b"re")]
    )
    logits = torch.randn(1, len(vocab))
    before = chain(logits)
    branch = chain.fork()
    ids = tiny.tokenizer.encode("return x", add_special_tokens=False)
    branch.advance(ids)
    chain.advance(ids)
    chain.rollback(len(ids))
    torch.testing.assert_close(chain(logits), before)
    assert not torch.equal(branch(logits), before)


def test_chain_scores_a_draft_like_sequential_advances(tiny):
    vocab = vocab_for(tiny.tokenizer)
    chain = ProcessorChain([MinNewTokens(1, tiny.stop_token_ids), HealingProcessor(vocab, b"ret")])
    draft = tiny.tokenizer.encode("return", add_special_tokens=False)[:2]
    assert_draft_rows_match_sequential(chain, torch.randn(len(draft) + 1, len(vocab)), draft)


class OnlyTokens:
    """A hard mask allowing only ``ids`` (a stand-in for a monitor that allows only names)."""

    def __init__(self, ids):
        self.ids = list(ids)

    def __call__(self, logits, draft=()):
        out = torch.full_like(logits, NEG)
        out[:, self.ids] = logits[:, self.ids]
        return out

    def advance(self, ids): ...
    def rollback(self, n): ...
    def fork(self): return self
    def reset(self): ...


def test_chain_ignores_a_mask_that_leaves_no_token_for_that_row_only():
    vocab = Vocab([b"", b"\n", b"\n    ", b"    ", b"x", b"\n\n"], frozenset({0}))
    chain = ProcessorChain([HealingProcessor(vocab, b"\n "), OnlyTokens([4])])  # they disagree
    rows = chain(torch.zeros(2, 6), draft=[2])  # row 1: after "\n    " healing allows everything
    assert finite(rows[0]) == {1, 2}  # the second mask is ignored here, healing kept
    assert finite(rows[1]) == {4}  # and applied where it leaves something
    agree = ProcessorChain([HealingProcessor(vocab, b"\n "), OnlyTokens([2, 4])])
    assert finite(agree(torch.zeros(1, 6))[0]) == {2}


def test_generate_keeps_healing_when_a_component_disagrees(tiny):
    """A mask that forbids every token healing allows must not stop the completion (it did:
    "every token of a row was masked out" in a RepoBench run with the monitor)."""
    from codedec.engine import Engine
    from codedec.sampling import SamplingParams

    engine = Engine(tiny)
    vocab = vocab_for(tiny.tokenizer)
    letters = [i for i, b in enumerate(vocab.token_bytes) if b.isalpha() and i not in vocab.special]
    ids = tiny.tokenizer.encode("x = 1", add_special_tokens=False)
    chain = [HealingProcessor(vocab, b"\n"), OnlyTokens(letters)]  # as codedec.prepare orders them
    steps = list(engine.generate(ids, SamplingParams(max_new_tokens=4, skip_text="\n"), chain))
    first = steps[0].token_ids[0]
    assert vocab.token_bytes[first].startswith(b"\n")  # healing won the first token
    assert all(vocab.token_bytes[t].isalpha() for s in steps[1:] for t in s.token_ids)  # then the mask


def test_parse_decoding():
    assert parse_decoding("") == ()
    assert parse_decoding(None) == ()
    assert parse_decoding("no-fences, min-tokens") == ("min-tokens", "no-fences")
    with pytest.raises(ValueError, match="unknown decoding component.*bogus.*Known"):
        parse_decoding("min-tokens,bogus")


def test_text_of_is_empty_for_special_and_unknown_ids():
    vocab = Vocab([b"<s>", b"ab", b"\n"], frozenset({0}))
    assert [vocab.text_of(i) for i in (0, 1, 2, 3, -1)] == [b"", b"ab", b"\n", b"", b""]
