"""None / single / multi-line decisions from the cursor context (table-driven; | is the cursor)."""

from __future__ import annotations

import pytest

from codedec.heuristics import MULTI, NONE, SINGLE, decide_mode, line_prefix, line_suffix, word_before


def split(text: str) -> tuple[str, str]:
    i = text.index("|")
    return text[:i], text[i + 1 :]


@pytest.mark.parametrize(
    "text, line_mode, want",
    [
        ("|", "auto", NONE),  # empty document
        ("   \n  |\n", "auto", NONE),  # only whitespace before the cursor
        ("x = fo|o\n", "auto", NONE),  # inside a word
        ("x = |value\n", "auto", NONE),  # a word right after the cursor
        ("foo(|, y)\n", "auto", NONE),  # code after the cursor on the line
        ("x = 1  |  # note\n", "auto", NONE),
        ("print(|)\n", "auto", SINGLE),  # closers only after the cursor: finish the line
        ("d = {'a': [|]}\n", "auto", SINGLE),
        ('s = "|"\n', "multi", SINGLE),  # closers win over a forced policy
        ("x = 1\ny = |\n", "auto", SINGLE),  # mid-statement
        ("def f(x):\n    return x +|", "auto", SINGLE),
        ("def f(x):\n    |\n", "auto", MULTI),  # indentation-only line
        ("def f(x):\n|", "auto", MULTI),  # empty line
        ("def f(x):|\n", "auto", MULTI),  # right after a block opener
        ("function f() {|\n", "auto", MULTI),
        ("def f(x): |\n", "auto", SINGLE),  # a space after the opener: the user continues the line
        ("x = foo(|\n", "auto", SINGLE),
        ("def f(x):\n    |\n", "single", SINGLE),  # forced
        ("x = |\n", "multi", MULTI),
        ("x = 1|\r\n", "auto", SINGLE),  # CRLF: the \r is not text after the cursor
    ],
)
def test_decide_mode(text, line_mode, want):
    prefix, suffix = split(text)
    assert decide_mode(prefix, suffix, line_mode) == want


def test_line_helpers():
    prefix, suffix = split("a\n  bc = de|f(g)\nnext")
    assert line_prefix(prefix) == "  bc = de"
    assert line_suffix(suffix) == "f(g)"
    assert word_before(prefix) == "de"
    assert word_before("x.") == ""
    with pytest.raises(ValueError, match="line_mode"):
        decide_mode("x", "", "paragraph")


def test_block_floor():
    from codedec.heuristics import block_floor, last_code_line

    doc = 'import math\n\n\ndef is_prime(n: int) -> bool:\n    """Doc."""\n'
    assert block_floor(doc) == 4  # after the docstring: the function body
    assert block_floor("def f(x):") == 1 and block_floor("class A:\n  def f(self):\n") == 3
    assert block_floor("x = 1\n") == 0 and block_floor("") == 0 and block_floor("\n\n") == 0
    assert last_code_line("a\n  \nb\n\n") == "b" and last_code_line(" \n") == ""


def test_a_two_space_body_stays_in_its_block():
    """The floor after a block opener is one column deeper, whatever the file's indent unit: a
    2-space body is not cut at its second line (it was, with a 4-column floor)."""
    from codedec.heuristics import block_floor
    from codedec.stopping import TextStopper

    stopper = TextStopper(min_indent=block_floor("def f():\n"))
    assert not stopper.check("  x = 1\n  return x\n").stopped
    check = TextStopper(min_indent=block_floor("def f():\n")).check("  x = 1\n  return x\nprint(f())")
    assert check.stopped and check.block_end and check.safe_len == len("  x = 1\n  return x")
