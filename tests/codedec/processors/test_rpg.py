"""RPG: statement stream and repetition detection, the penalty on critical tokens, life cycle,
and an engine run with a scripted model that loops."""

from __future__ import annotations

import math

import pytest
import torch
from protocol_checks import assert_draft_rows_match_sequential

from codedec.decoding import ComponentContext, build_processors, parse_decoding
from codedec.engine import Engine
from codedec.processors.rpg import RPGConfig, RPGProcessor, StatementStream, repetition_stats
from codedec.sampling import SamplingParams
from codedec.vocab import vocab_for

ELIFS = "".join(
    f"    elif x == {i}:\n        return '{chr(97 + i)}'\n" for i in range(1, 5)
)


def stream_of(text: str) -> StatementStream:
    s = StatementStream()
    for ch in text:
        s.push(ch.encode())
    return s


def test_detects_repeated_blocks_at_the_block_start():
    s = stream_of("def f(x):\n    if x == 0:\n        return 'a'\n" + ELIFS)
    k, period = s.repetitions(exact=False)
    assert (k, period) == (4, 2)
    s.push(b"    ")  # still at the start of a statement
    assert s.lexer.at_line_start()
    for ch in "    elif x == 9:\n":
        s.push(ch.encode())
    assert s.repetitions(exact=False) == (0, 0)  # mid-block: the next statement is a return
    assert s.repetitions(exact=True) == (0, 0)


def test_exact_and_structural_keys():
    s = stream_of("print(a)\nprint(a)\nprint(b)\n")
    assert s.repetitions(exact=False) == (3, 1)
    assert s.repetitions(exact=True) == (0, 0)  # the last one differs in content
    s = stream_of("a = 1\n" "if a:\n    b = 2\n" "c = 3\n")
    assert s.repetitions(exact=False) == (0, 0)


def test_repetition_stats():
    stats = repetition_stats("x = 1\nx = 1\ny = 2\n\nfoo(1)\n")
    assert stats["lines"] == 4 and stats["repeated_lines"] == 1
    assert stats["repeated_statements"] == 3  # x = 1 / x = 1 / y = 2: one shape three times
    assert repetition_stats("")["repeated_line_rate"] == 0.0


@pytest.fixture(scope="module")
def vocab(tiny):
    return vocab_for(tiny.tokenizer)


def encode(tiny, text: str) -> list[int]:
    return tiny.tokenizer.encode(text, add_special_tokens=False)


def test_penalty_hits_the_critical_token_only_at_statement_start(tiny, vocab):
    proc = RPGProcessor(vocab, tiny.stop_token_ids, RPGConfig(decay=0.5, min_repeats=3))
    proc.advance(encode(tiny, "print(a)\nprint(b)\nprint(c)\n"))
    logits = torch.zeros(1, len(vocab))
    out = proc(logits)[0]
    lowered = set((out < 0).nonzero().flatten().tolist())
    p_id = encode(tiny, "p")[0]
    assert p_id in lowered
    assert math.isclose(float(out[p_id]), math.log(0.5), rel_tol=1e-6)  # k = 3 -> e = 1
    assert all(vocab.token_bytes[i].strip() in (b"p", b"print") for i in lowered)
    proc.advance(encode(tiny, "pr"))
    assert torch.equal(proc(logits), logits)  # mid-statement: untouched


def test_eos_boost_and_growth(tiny, vocab):
    cfg = RPGConfig(decay=0.5, min_repeats=3, eos_boost=2.0)
    proc = RPGProcessor(vocab, tiny.stop_token_ids, cfg)
    proc.advance(encode(tiny, "x = 1\n" * 5))  # verbatim: structure k=5 -> 3, content k=5 -> 4
    out = proc(torch.zeros(1, len(vocab)))[0]
    assert float(out[tiny.stop_token_ids[0]]) == pytest.approx(2.0 * 7)
    assert float(out[encode(tiny, "x")[0]]) == pytest.approx(7 * math.log(0.5))


def test_fork_rollback_and_draft_rows_leave_no_trace(tiny, vocab):
    proc = RPGProcessor(vocab, tiny.stop_token_ids)
    proc.advance(encode(tiny, "print(a)\nprint(b)\n"))
    logits = torch.randn(1, len(vocab))
    before = proc(logits)
    more = encode(tiny, "print(c)\nprint(d)\n")
    branch = proc.fork()
    branch.advance(more)
    assert not torch.equal(branch(logits), before)
    assert torch.equal(proc(logits), before)  # the fork did not touch the original
    proc.advance(more)
    proc.rollback(len(more))
    assert torch.equal(proc(logits), before)
    proc.reset()
    assert proc.stream.statements == [] and torch.equal(proc(logits), logits)


def test_draft_rows_match_sequential_scoring(tiny, vocab):
    proc = RPGProcessor(vocab, tiny.stop_token_ids)
    proc.advance(encode(tiny, "print(a)\nprint(b)\nprint(c)"))
    draft = encode(tiny, "\nprint(d)\n")
    assert_draft_rows_match_sequential(proc, torch.randn(len(draft) + 1, len(vocab)), draft)
    assert len(proc.stream.token_starts) == len(encode(tiny, "print(a)\nprint(b)\nprint(c)"))


def test_registered_by_name_and_first_in_order(tiny, vocab):
    assert parse_decoding("no-fences,rpg,min-tokens") == ("rpg", "min-tokens", "no-fences")
    (proc,) = build_processors(["rpg"], ComponentContext(vocab, tiny.stop_token_ids))
    assert isinstance(proc, RPGProcessor)


def test_engine_ends_a_looping_completion(scripted):
    loop = ["x = f(x)\n"] * 12
    loaded, prompt = scripted(loop)
    engine = Engine(loaded)
    plain = list(engine.generate(prompt, SamplingParams(max_new_tokens=60)))
    assert plain[-1].finish_reason == "length"
    proc = RPGProcessor(engine.vocab, loaded.stop_token_ids, RPGConfig(decay=0.5, eos_boost=3.0))
    steps = list(engine.generate(prompt, SamplingParams(max_new_tokens=60), processors=[proc]))
    text = "".join(s.text for s in steps)
    assert steps[-1].finish_reason == "stop"
    assert 2 <= text.count("x = f(x)") < 6


def test_rollback_does_not_reuse_a_stale_penalty(tiny, vocab):
    proc = RPGProcessor(vocab, tiny.stop_token_ids)
    logits = torch.zeros(1, len(vocab))
    rep = encode(tiny, "print(a)\nprint(b)\nprint(c)\n")
    proc.advance(rep)
    assert not torch.equal(proc(logits), logits)
    proc.rollback(len(rep))
    other = encode(tiny, "x = 1\nif x:\n    y = 2\n")  # as many statements, no repetition
    proc.advance(other)
    assert torch.equal(proc(logits), logits)
