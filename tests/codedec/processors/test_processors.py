"""Processor protocol: P-row semantics, chain life cycle, and the real processors."""

from __future__ import annotations

import pytest
import torch

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
    logits = torch.randn(len(draft) + 1, len(vocab))
    rows = chain(logits, draft=draft)
    seq = chain.fork()
    for i in range(len(draft) + 1):
        torch.testing.assert_close(rows[i], seq(logits[i : i + 1])[0])
        if i < len(draft):
            seq.advance([draft[i]])


def test_parse_decoding():
    assert parse_decoding("") == ()
    assert parse_decoding(None) == ()
    assert parse_decoding("no-fences, min-tokens") == ("min-tokens", "no-fences")
    with pytest.raises(ValueError, match="unknown decoding component.*bogus.*Known"):
        parse_decoding("min-tokens,bogus")
