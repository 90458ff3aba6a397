"""Post-processing of generated text: lines, indentation, duplicate closers, suffix overlap."""

from __future__ import annotations

import pytest

from codedec.heuristics import MULTI, SINGLE
from codedec.postprocess import (
    detect_indent_unit,
    finalize,
    first_unmatched_closer,
    fix_indentation,
    open_quote,
    strip_duplicate_closers,
    trim_suffix_overlap,
)


def split(text: str) -> tuple[str, str]:
    i = text.index("|")
    return text[:i], text[i + 1 :]


@pytest.mark.parametrize(
    "completion, after, in_string, want",
    [
        ("a, b)", ")", None, "a, b"),  # the editor's ) is already there
        ("a, b)):", "))", None, "a, b"),
        ("f(x)", ")", None, "f(x)"),  # balanced inside the completion: kept
        ("f(x))", ")", None, "f(x)"),
        ("[1, 2]]", "]", None, "[1, 2]"),
        ('hello")', '")', '"', "hello"),  # inside a string: cut at the closing quote
        ("it's\"", '"', '"', "it's"),
        ('a, "b)")', ")", None, 'a, "b)"'),  # a ) inside a string literal does not count
        ("x]", ")", None, "x]"),  # a different closer: left alone
        ("a, b", ")", None, "a, b"),
        ("a, b)", "", None, "a, b)"),  # nothing after the cursor: the ) is needed
        ("a, b )", " )", None, "a, b"),
    ],
)
def test_strip_duplicate_closers(completion, after, in_string, want):
    assert strip_duplicate_closers(completion, after, in_string) == want


@pytest.mark.parametrize(
    "line, want",
    [("x = ", None), ('print("ab', '"'), ("s = 'it\\'s", "'"), ('a = "x" + "', '"'), ('a = "x"', None)],
)
def test_open_quote(line, want):
    assert open_quote(line) == want


def test_first_unmatched_closer():
    assert first_unmatched_closer("(a)]") == 3
    assert first_unmatched_closer("(a)") is None
    assert first_unmatched_closer('x\\"y"', '"') == 4  # escaped quote skipped


@pytest.mark.parametrize(
    "text, completion, want",
    [
        # the model re-generated the line after the cursor
        ("def f(x):\n    |\n    return y\n", "y = x * 2\n    return y", "y = x * 2"),
        # the first line itself duplicates the next line (the cursor's line is blank)
        ("def f(x):\n    |\n    return y\n", "return y", ""),
        # tail equal to the head of the suffix
        ("x = compute(|) + 1\n", "a) + 1", "a"),
        # short overlaps (< 4 visible characters) are not trimmed
        ("x = [|]\n", "1, 2]", "1, 2]"),
        # a closing brace line that is already there
        ("function f() {\n  |\n}\n", "return 1;\n}", "return 1;"),
        # no overlap
        ("def f():\n    |\n\nprint(1)\n", "pass", "pass"),
    ],
)
def test_trim_suffix_overlap(text, completion, want):
    prefix, suffix = split(text)
    assert trim_suffix_overlap(completion, prefix, suffix) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("def f():\n    x = 1\n    if x:\n        y = 2\n", "    "),
        ("function f() {\n  a();\n  if (b) {\n    c();\n  }\n}\n", "  "),
        ("def f():\n\tx = 1\n\tif x:\n\t\ty = 2\n", "\t"),
        ("x = 1\n", "    "),
    ],
)
def test_detect_indent_unit(text, want):
    assert detect_indent_unit(text) == want


@pytest.mark.parametrize(
    "text, completion, want",
    [
        # tabs in a space-indented file
        ("def f():\n    x = 1\n|", "def g():\n\treturn 2", "def g():\n    return 2"),
        # spaces in a tab-indented file
        ("def f():\n\tx = 1\n\t|", "y = 2\n\tif y:\n\t    z = 3", "y = 2\n\tif y:\n\t\tz = 3"),
        # the cursor already sits at the block's indentation: the model's extra indent goes,
        # the following lines keep their relative indentation
        ("def f(x):\n    |", "    if x:\n        return 1", "if x:\n    return 1"),
        # after a block opener one more level is allowed
        ("def f(x):\n    if x:\n    |", "    return 1", "    return 1"),
        # a correct first line is left alone
        ("def f(x):\n    |", "return x", "return x"),
        # cursor at column 0 on an empty line: the model's indentation is what the line needs
        ("def f(x):\n|", "    return x", "    return x"),
    ],
)
def test_fix_indentation(text, completion, want):
    prefix, _ = split(text)
    assert fix_indentation(completion, prefix) == want


@pytest.mark.parametrize(
    "text, completion, mode, want",
    [
        ("x = foo(|)\n", "a, b)\nprint(x)", SINGLE, "a, b"),
        ("def f(x):\n    |\n", "return x + 1\n\n\n", MULTI, "return x + 1"),
        ("def f(x):|\n", "\n    return x", MULTI, "\n    return x"),
        ("x = |\n", "   \n", MULTI, ""),
        ("x = |\n", "", SINGLE, ""),
        ("def f(x):\n    |\n    return y\n", "y = x\n    return y", MULTI, "y = x"),
        ('print("|")\n', 'hello")', SINGLE, "hello"),
    ],
)
def test_finalize(text, completion, mode, want):
    prefix, suffix = split(text)
    assert finalize(completion, prefix, suffix, mode) == want


@pytest.mark.parametrize(
    "completion, want",
    [
        # the held-out RepoBench-style case: one sentence six times inside a string literal
        ("raise TypeError('Only a list of strings is allowed. " + "Only a list of strings is allowed. " * 5
         + "')", "raise TypeError('Only a list of strings is allowed. ')"),
        # cut in the middle of a copy by the token limit: the partial copy goes too
        ("msg = 'Error: file not found. Error: file not found. Error: fi", "msg = 'Error: file not found."),
        ("x = compute(1)\nx = compute(1)\nx = compute(1)", "x = compute(1)"),
        ("a = foo(1)\nb = bar(2)\na = foo(1)\nb = bar(2)\nc = 3", "a = foo(1)\nb = bar(2)"),
        # code's normal repeats stay: not back to back, short lines, data
        ("if a:\n    return None\nif b:\n    return None", "if a:\n    return None\nif b:\n    return None"),
        ("        )\n    )\n)", "        )\n    )\n)"),
        ("data = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]",
         "data = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"),
        ("row = ['abc', 'abc', 'abc', 'abc', 'abc', 'abc', 'abc']", "row = ['abc', 'abc', 'abc', 'abc', 'abc', 'abc', 'abc']"),
        ("print('hello world hello world')", "print('hello world hello world')"),
        ("sep = '-' * 80  # ----------------------------------------",
         "sep = '-' * 80  # ----------------------------------------"),
    ],
)
def test_cut_repetition(completion, want):
    from codedec.postprocess import cut_repetition

    assert cut_repetition(completion) == want


def test_finalize_cuts_repetition():
    text = "def check(items):\n    if not all(isinstance(i, str) for i in items):\n        "
    completion = "raise TypeError('Only strings are allowed here. Only strings are allowed here.')\n"
    assert finalize(completion, text, "", "multi") == "raise TypeError('Only strings are allowed here.')"
