"""Incremental detokenizer: UTF-8 safety, special tokens, rollback/fork."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from codedec.detokenize import IncrementalDetokenizer
from codedec.vocab import Vocab, vocab_for

TRICKY = ["héllo", "🎉 party", "中文字符", "👩‍👩‍👧 family", "tab\tand\nnewline", "mixed é🎉中 x"]


def stream(vocab, ids):
    d = IncrementalDetokenizer(vocab)
    deltas = [d.push([i]) for i in ids]
    deltas.append(d.flush())
    return deltas


def test_tricky_text_streams_without_replacement_chars(tiny):
    vocab = vocab_for(tiny.tokenizer)
    for text in TRICKY:
        ids = tiny.tokenizer.encode(text, add_special_tokens=False)
        deltas = stream(vocab, ids)
        assert "".join(deltas) == text
        assert all("\ufffd" not in d for d in deltas)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_any_text_round_trips_token_by_token(tiny, text):
    vocab = vocab_for(tiny.tokenizer)
    ids = tiny.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    deltas = stream(vocab, ids)
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas) or "\ufffd" in text


def test_byte_fallback_pieces():
    # SentencePiece-style byte fallback: "é" = <0xC3><0xA9>, "🎉" = 4 byte pieces.
    table = [b"", b"a", b"\xc3", b"\xa9", b"\xf0", b"\x9f", b"\x8e", b"\x89"]
    vocab = Vocab(table, frozenset({0}))
    deltas = stream(vocab, [1, 2, 3, 4, 5, 6, 7, 1])
    assert deltas == ["a", "", "é", "", "", "", "🎉", "a", ""]


def test_special_tokens_produce_no_text(tiny):
    vocab = vocab_for(tiny.tokenizer)
    eos = tiny.tokenizer.eos_token_id
    ids = tiny.tokenizer.encode("x", add_special_tokens=False)
    assert "".join(stream(vocab, ids + [eos])) == "x"


def test_unfinished_character_is_flushed_as_replacement():
    vocab = Vocab([b"", b"\xe4\xb8"], frozenset())
    d = IncrementalDetokenizer(vocab)
    assert d.push([1]) == ""
    assert d.flush() == "\ufffd"


def test_rollback_and_fork_leave_no_trace(tiny):
    vocab = vocab_for(tiny.tokenizer)
    ids = tiny.tokenizer.encode("ab 🎉 cd", add_special_tokens=False)
    d = IncrementalDetokenizer(vocab)
    d.push(ids[:3])
    branch = d.fork()
    branch.push(ids[3:])
    before = (d.text, list(d.ids))
    d.push(ids[3:])
    d.rollback(len(ids) - 3)
    assert (d.text, d.ids) == before
    d.push(ids[3:])
    assert d.text + d.flush() == branch.text + branch.flush() == "ab 🎉 cd"
