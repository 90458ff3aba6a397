"""The grammar processor: cursor state, indentation, bracket floor, joining the suffix, fall-backs,
life cycle, and a tiny-model run whose output stays valid Python."""

from __future__ import annotations

import pytest
import torch
from protocol_checks import assert_draft_rows_match_sequential, assert_fork_and_rollback_leave_no_trace

from codedec.decoding import ComponentContext, TextContext, build_processors
from codedec.engine import Engine
from codedec.processors.cursor import analyse
from codedec.processors.grammar import GrammarConfig, GrammarProcessor
from codedec.processors.indent import IndentState, IndentTracker
from codedec.vocab import vocab_for


@pytest.fixture(scope="module")
def tok(tiny):
    return tiny.tokenizer


@pytest.fixture(scope="module")
def vocab(tok):
    return vocab_for(tok)


def make(tiny, prefix, suffix="", single_line=False, budget=None) -> GrammarProcessor:
    tok = tiny.tokenizer
    return GrammarProcessor(vocab_for(tok), tiny.stop_token_ids, tok, prefix, suffix, GrammarConfig(single_line, budget))


def ok(proc, tok, text) -> bool:
    """Is the first token of ``text`` allowed next?"""
    v = len(vocab_for(tok))
    row = proc(torch.zeros(1, v))[0]
    ids = tok.encode(text, add_special_tokens=False)
    return bool(torch.isfinite(row[ids[0]]))


def eos_ok(proc, tiny) -> bool:
    v = len(vocab_for(tiny.tokenizer))
    return bool(torch.isfinite(proc(torch.zeros(1, v))[0][tiny.stop_token_ids[0]]))


def test_indent_tracker_steps():
    t = IndentTracker()
    t.on_line(0, header=True)  # def f():
    assert t.state.expect_indent
    t.on_line(4, header=False)
    t.on_line(4, header=True)  # if x:
    t.on_line(8, header=False)
    assert t.state.stack == (0, 4, 8)
    t.on_line(0, header=False)  # dedent to the module
    assert t.state == IndentState((0,), False, False)
    t.truncate(2)
    assert t.state.stack == (0, 4)
    t.on_line(2, header=False)  # a dedent to an unknown width: no opinion any more
    assert t.state.broken


def test_cursor_analysis():
    cur = analyse("import os\n\ndef f(a,\n      b", "):\n    return a\n")
    assert cur.region.startswith(b"def f") and cur.depth == 1 and not cur.broken
    assert cur.region[cur.line_start :] == b"def f(a,\n      b"
    assert cur.suffix_head == b"):\n" and cur.suffix_closes == 1 and cur.suffix_inline
    assert analyse("def f():\n    x = = 1\n    ", "").broken  # inside the statement we continue
    assert not analyse("x = = 1\ny = 2\n", "").broken  # an earlier statement does not matter
    cur = analyse("def f():\n", "\n    return 1\n")
    assert cur.suffix_head == b"\n" and cur.suffix_indent == 4 and not cur.suffix_inline
    assert analyse("", "   \n").at_eof


def test_indentation_after_a_header(tiny, tok):
    proc = make(tiny, "def f(x):\n")
    assert proc.active
    assert not ok(proc, tok, "return")  # column 0 after a header
    assert ok(proc, tok, "    ")
    assert not eos_ok(proc, tiny)  # a header at the end of the file needs a body
    proc.advance(tok.encode("    return x\n", add_special_tokens=False))
    assert eos_ok(proc, tiny)
    assert not ok(proc, tok, "  ") or ok(proc, tok, "    ")  # 2 spaces may still grow to 4


def test_bracket_floor_and_joining_the_suffix(tiny, tok):
    proc = make(tiny, "x = foo(a, ", ")\n")
    assert proc.floor == 1
    assert not ok(proc, tok, ")")  # the suffix closes it
    assert eos_ok(proc, tiny)  # foo(a, ) is fine
    proc.advance(tok.encode(" b + (1", add_special_tokens=False))
    assert not eos_ok(proc, tiny)  # "(1" is still open: ")\n" cannot follow yet
    assert ok(proc, tok, ")")  # closing our own bracket is fine
    proc.advance(tok.encode(")", add_special_tokens=False))
    assert eos_ok(proc, tiny)


def test_starts_inside_a_string(tiny, tok):
    proc = make(tiny, 's = "abc', '"\n')
    assert proc.active
    assert not ok(proc, tok, "\n")  # no newline inside a one-line string
    assert eos_ok(proc, tiny)


def test_single_line_mode_keeps_newlines_out_of_brackets(tiny, tok):
    proc = make(tiny, "    ", "\n", single_line=True)
    proc.advance(tok.encode("x = f(", add_special_tokens=False))
    assert not ok(proc, tok, "\n")
    proc.advance(tok.encode("1)", add_special_tokens=False))
    assert ok(proc, tok, "\n")


def test_closes_brackets_before_the_budget_runs_out(tiny, tok):
    ids = tok.encode("f([1", add_special_tokens=False)
    proc = make(tiny, "x = ", "\n", budget=len(ids) + 2)  # two open brackets, two tokens left
    proc.advance(ids)
    assert ok(proc, tok, "]") and not ok(proc, tok, ",") and not ok(proc, tok, "+")
    room = make(tiny, "x = ", "\n", budget=len(ids) + 3)  # one token to spare: no new bracket
    room.advance(ids)
    assert ok(room, tok, ",") and not ok(room, tok, "(")
    roomy = make(tiny, "x = ", "\n", budget=len(ids) + 20)
    roomy.advance(ids)
    assert ok(roomy, tok, ",")
    inner = make(tiny, "x = ", "\n", budget=len(ids) + 4)
    inner.advance(tok.encode("f([1 +", add_special_tokens=False))  # no closer is valid here: no preference
    assert ok(inner, tok, "1")


def test_comprehension_only_as_the_sole_item(tiny, tok):
    proc = make(tiny, "y = [x, ", "")
    proc.advance(tok.encode("x", add_special_tokens=False))
    assert not ok(proc, tok, " for")
    proc = make(tiny, "y = [", "")
    proc.advance(tok.encode("x", add_special_tokens=False))
    assert ok(proc, tok, " for")


def test_falls_back_instead_of_blocking(tiny, tok, vocab):
    assert not make(tiny, "x = = 1\n").active  # broken before the cursor
    assert not make(tiny, "x = 1 +* ").active  # the current line is already wrong
    proc = GrammarProcessor(vocab, tiny.stop_token_ids, None, "x = ", "")
    assert not proc.active and "tokenizer" in proc.reason
    logits = torch.randn(1, len(vocab))
    assert torch.equal(proc(logits), logits)
    proc = make(tiny, "x = ")
    proc.advance(tok.encode(")", add_special_tokens=False))  # a refused token: suspended
    assert proc.suspended_at == 0 and torch.equal(proc(logits), logits)
    proc.rollback(1)
    assert proc.suspended_at is None and not torch.equal(proc(logits), logits)


def test_fork_rollback_and_draft_rows_leave_no_trace(tiny, tok, vocab):
    proc = make(tiny, "def f(x):\n    ", "\n")
    logits = torch.randn(1, len(vocab))
    before = proc(logits)
    ids = tok.encode("y = [x,\n  1]\n    return y", add_special_tokens=False)
    assert_fork_and_rollback_leave_no_trace(proc, logits, ids)
    draft = ids[:6]
    rows = proc(torch.randn(len(draft) + 1, len(vocab)).clone(), draft)
    assert rows.shape == (len(draft) + 1, len(vocab))
    assert_draft_rows_match_sequential(proc, torch.randn(len(draft) + 1, len(vocab)), draft)
    assert torch.equal(proc(logits), before)


def test_registered_and_reads_the_text_context(tiny, vocab):
    ctx = ComponentContext(vocab, tiny.stop_token_ids, TextContext("x = (", ")\n"), tiny.tokenizer)
    (proc,) = build_processors(["grammar"], ctx)
    assert isinstance(proc, GrammarProcessor) and proc.active and proc.floor == 1


def test_tiny_model_output_stays_valid_python(tiny):
    import tree_sitter
    import tree_sitter_python

    from codedec.prepare import prepare

    engine = Engine(tiny)
    prefix = "def f(x):\n"
    prepared = prepare(engine, prefix, "", max_tokens=48, temperature=1.0, seed=3, decoding=["grammar"],
                       heal=False, block_end=False)
    steps = list(engine.generate(prepared.prompt_ids, prepared.params, prepared.chain))
    out = "".join(s.text for s in steps)
    complete_lines = out[: out.rfind("\n") + 1]
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))
    code = (prefix + (complete_lines if complete_lines.strip() else "    pass\n")).encode()
    assert not parser.parse(code).root_node.has_error, out


def test_closes_an_open_string_before_the_budget_runs_out(tiny, tok):
    ids = tok.encode("f('ab", add_special_tokens=False)
    proc = make(tiny, "x = ", "\n", budget=len(ids) + 4)
    proc.advance(ids)
    assert ok(proc, tok, "'") and not ok(proc, tok, "c")


def test_no_line_left_of_the_suffix_where_it_could_end(tiny, tok):
    proc = make(tiny, "def f(x):\n    if x:\n        y = 1\n", "        return y\n")
    assert eos_ok(proc, tiny)
    assert not ok(proc, tok, "return")  # column 0: the suffix's `return y` could not follow
    fork = proc.fork()
    fork.advance(tok.encode("   ", add_special_tokens=False))
    assert not ok(fork, tok, " return")  # column 4
    proc.advance(tok.encode("       ", add_special_tokens=False))  # 7 columns
    assert ok(proc, tok, " z")  # column 8, where the suffix is


def test_ends_instead_of_starting_a_line_the_budget_would_cut(tiny, tok):
    """At a line start where the suffix can follow, with fewer tokens left than the last lines
    took, only a stop is allowed; with room, or where the suffix cannot follow yet, writing goes on."""
    prefix, suffix = "def f(x):\n", "    return y\n"
    body = tok.encode("    y = x + 1\n    y = y * 2\n", add_special_tokens=False)
    ends = [0] + [k + 1 for k, i in enumerate(body) if "\n" in tok.decode([i])]
    longest = max(b - a for a, b in zip(ends, ends[1:], strict=False))  # tokens of the longer line
    tight = make(tiny, prefix, suffix, budget=len(body) + longest - 1)
    tight.advance(body)
    assert tight.next_line_wont_fit() and eos_ok(tight, tiny)
    assert not ok(tight, tok, "    z = 3\n")
    roomy = make(tiny, prefix, suffix, budget=len(body) + longest + 8)
    roomy.advance(body)
    assert not roomy.next_line_wont_fit() and ok(roomy, tok, "    z = 3\n")
    header = make(tiny, prefix, suffix, budget=len(body) + 4)
    header.advance(tok.encode("    if x:\n", add_special_tokens=False))  # a block must follow: cannot end
    assert ok(header, tok, "        z = 3\n")
    fork = tight.fork()
    fork.rollback(3)
    assert not fork.next_line_wont_fit() and tight.next_line_wont_fit()  # the rollback left no trace


def test_infill_does_not_run_on_into_the_enclosing_scope(tiny, tok):
    """The suffix goes on inside the function (an `else:` the completion must set up): no line of
    the completion may start at column 0 — even where the completion cannot end yet."""
    prefix = 'def f(x):\n    """Doc."""\n'
    proc = make(tiny, prefix, "        else:\n            return 1\n")
    assert not ok(proc, tok, "def g():") and not ok(proc, tok, "print(1)") and not ok(proc, tok, "# Test it")
    assert proc.block_floor == 4 and ok(proc, tok, "    # a comment in the body")
    assert ok(proc, tok, "    if x:")
    proc.advance(tok.encode("    if x:\n        y = 1\n", add_special_tokens=False))
    assert not ok(proc, tok, "def g():") and ok(proc, tok, "    z = 2")
    # an inner block is no floor: the gap may close it and open a sibling the suffix continues
    inner = make(tiny, "def f(x):\n    for c in x:\n        if c:\n            y = 1\n", "            y = 2\n")
    assert ok(inner, tok, "        elif x:") and not ok(inner, tok, "print(1)") and inner.block_floor == 4
    at_module = make(tiny, prefix, "def g():\n    pass\n")  # the suffix is at column 0: no floor
    assert ok(at_module, tok, "def h():") and at_module.block_floor == 0
    # token healing backed the prompt up by its newline: the cursor looks mid-line (after the
    # docstring); the floor is taken at the first line start the completion makes
    healed = make(tiny, 'def f(x):\n    """Doc."""', "        else:\n            return 1\n")
    healed.advance(tok.encode("\n", add_special_tokens=False))
    assert not ok(healed, tok, "def g():") and ok(healed, tok, "    if x:") and healed.block_floor == 4
    healed.rollback(1)
    assert healed.block_floor is None  # set after the rollback point: forgotten
