"""The incremental Python lexer: chunking-invariant, agrees with ``tokenize``, exact rollback."""

from __future__ import annotations

import io
import random
import tokenize
from pathlib import Path

import pytest

from codedec.processors.pylex import KEYWORD, NAME, STRING, PyLexer

SOURCE = Path(__file__).resolve().parents[3].joinpath("codedec", "engine.py").read_bytes()


def lex(chunks) -> tuple:
    lx = PyLexer()
    for c in chunks:
        lx.feed(c)
    lx.feed(b"\n")
    return [(x.kind, lx.lexeme_bytes(x), x.line) for x in lx.lexemes], lx.line_ends, lx.line_indents


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng, out, i = random.Random(seed), [], 0
    while i < len(data):
        k = rng.randint(1, 7)
        out.append(data[i : i + k])
        i += k
    return out


def test_agrees_with_tokenize_on_a_real_file():
    lexemes, line_ends, _ = lex([SOURCE])
    toks = list(tokenize.tokenize(io.BytesIO(SOURCE).readline))
    assert len(line_ends) == sum(t.type == tokenize.NEWLINE for t in toks)
    kinds = (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING)
    assert [b for _, b, _ in lexemes] == [t.string.encode() for t in toks if t.type in kinds]


@pytest.mark.parametrize("seed", range(4))
def test_chunking_does_not_change_the_result(seed):
    assert lex(random_chunks(SOURCE, seed)) == lex([SOURCE])


@pytest.mark.parametrize(
    "text",
    [
        b"x = '''a\\'''b'''\ny = 1\n",
        b'f(r"\\\\", "")\n',
        b"s = 'unterminated\nz = 2\n",
        b"a = [1,\n     2]  # c ' \"\nb = 3\n",
        b"if x:\n\tpass\n",
    ],
)
def test_strings_comments_and_brackets_split_anywhere(text):
    whole = lex([text])
    for cut in range(1, len(text)):
        assert lex([text[:cut], text[cut:]]) == whole, cut


def test_state_queries():
    lx = PyLexer()
    lx.feed(b"def f(a,\n")
    assert lx.depth == 1 and not lx.at_line_start()
    lx.feed(b"      b):\n    ")
    assert lx.depth == 0 and lx.at_line_start() and lx.line_indents == [0]
    lx.feed(b"return '''doc")
    assert lx.in_string
    kinds = [x.kind for x in lx.lexemes]
    assert kinds[0] == KEYWORD and NAME in kinds and STRING not in kinds
    lx.feed(b"'''\n")
    assert not lx.in_string and lx.line_indents == [0, 4]


def test_rollback_restores_everything():
    lx = PyLexer()
    for c in random_chunks(SOURCE[:2000], 1):
        lx.feed(c)
    snap = (list(lx.lexemes), list(lx.line_ends), list(lx.line_indents), lx.stack, bytes(lx.buf), lx.pos)
    for piece in (b"x = '''abc", b"\n  def", b"'''(", b"[1,", b"\n"):
        lx.feed(piece)
    lx.rollback(5)
    assert snap == (list(lx.lexemes), list(lx.line_ends), list(lx.line_indents), lx.stack, bytes(lx.buf), lx.pos)
    with pytest.raises(ValueError):
        lx.rollback(10**6)


def test_a_lone_quote_at_the_end_is_an_open_string():
    lx = PyLexer()
    lx.feed(b"x = f(")
    assert not lx.in_string
    lx.feed(b"'")
    assert lx.in_string and lx.open_quote == b"'"
    lx.feed(b"''")
    assert lx.open_quote == b"'''"


@pytest.mark.parametrize("text,expr", [
    (b'x = f"a {obj.na', b"obj.na"),
    (b"x = rf'''{p.", b"p."),
    (b'x = f"{d[\'k\']} {os.', b"os."),  # a string inside an earlier field
    (b'x = f"{a != b.', b"a != b."),  # != is not a conversion
    (b'x = f"{a!r} {b:>{w', b"w"),  # a nested field in a format spec
    (b'x = F"""{f(1,\n  y.', b"f(1,\n  y."),
    (b'x = f"a {{obj.', None),  # {{ is a literal brace
    (b'x = f"{a:', None),  # a format spec is not code
    (b'x = f"{a!r', None),
    (b'x = f"{a}', None),
    (b'x = "{obj.', None),  # not an f-string
    (b'x = b"{obj.', None),
    (b"x = 1 + y.", None),  # not in a string at all
])
def test_fstring_field(text, expr):
    lx = PyLexer()
    for c in random_chunks(text, 3):
        lx.feed(c)
    got = lx.fstring_field()
    assert (got and got[1]) == expr or (got is None and expr is None)
    if got:
        assert bytes(lx.buf[got[0]:]) == expr
