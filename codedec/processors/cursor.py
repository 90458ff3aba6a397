"""The syntactic state at a cursor, from the text around it (for the ``grammar`` processor).

``analyse(prefix, suffix)`` returns a ``Cursor``:

1. restart point: tree-sitter parses the prefix; the last top-level node that starts at column 0
   before the cursor is a safe place to start lexing (depth 0, not inside a string);
2. the region from there to the cursor goes through ``pylex.PyLexer``: open brackets, an open
   string or comment, the start of the current logical line, each finished line's indentation;
3. "broken before the cursor": tree-sitter re-parses the region up to the current logical line;
   an ERROR or MISSING node there means the file is already wrong where we would start, and the
   grammar should not constrain this request;
4. the suffix: its first logical line (``suffix_head``; the completion has to be able to run
   into it), how many of the brackets open at the cursor it closes, and the indentation of its
   first code line when that line starts after a newline.

What it is not: incremental. It runs once per request (a few ms for a 30 KB prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from codedec.processors.pylex import CLOSERS, OP, OPENERS, PyLexer, indent_width

MAX_REGION = 256 * 1024


@dataclass(frozen=True)
class Cursor:
    region: bytes  # prefix bytes from the restart point to the cursor
    line_start: int  # offset in ``region`` where the current logical line starts
    depth: int  # brackets open at the cursor
    suffix_head: bytes  # the suffix's first logical line (b"\n" for a blank suffix)
    suffix_closes: int  # brackets open at the cursor that the suffix head closes
    suffix_indent: int | None  # blanks before the suffix's first code, when it starts a line
    suffix_inline: bool  # the suffix's first line has code: it continues the cursor's line
    broken: str = ""  # why the grammar cannot decide ("" when it can)

    @property
    def at_eof(self) -> bool:
        """Nothing but blanks after the cursor."""
        return self.suffix_head == b"\n" and self.suffix_indent is None


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_python

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


def restart_point(prefix: bytes) -> int:
    """Byte offset of the last top-level statement that starts at column 0 (0 if none)."""
    if not prefix:
        return 0
    root = _parser().parse(prefix).root_node
    best = 0
    for child in root.children:
        if child.start_byte >= len(prefix):
            break
        if child.start_point.column == 0 and child.type not in ("comment",):
            best = child.start_byte
    return best


def has_syntax_error(code: bytes) -> bool:
    return bool(code.strip()) and _parser().parse(code).root_node.has_error


@lru_cache(maxsize=8)
def analyse(prefix: str, suffix: str) -> Cursor:
    """The cursor state for a completion between ``prefix`` and ``suffix`` (module docstring).
    Cached: the grammar and the monitor of one request analyse the same text."""
    pre = prefix.encode("utf-8")
    start = restart_point(pre)
    region = pre[start:]
    head, closes, suffix_indent, inline = _suffix_facts(suffix.encode("utf-8"))
    if len(region) > MAX_REGION:
        return Cursor(b"", 0, 0, head, closes, suffix_indent, inline, broken="statement around the cursor too long")
    lexer = PyLexer()
    lexer.feed(region)
    line_start = lexer.line_ws_start
    broken = ""
    if has_syntax_error(region[:line_start]):
        broken = "syntax error before the cursor"
    return Cursor(region, line_start, lexer.depth, head, closes, suffix_indent, inline, broken)


def _suffix_facts(suffix: bytes) -> tuple[bytes, int, int | None, bool]:
    """(head, closers of outer brackets in the head, blanks before the suffix's first code,
    whether that code is on the cursor's line)."""
    first_nl = suffix.find(b"\n")
    first_line = suffix if first_nl < 0 else suffix[: first_nl + 1]
    if not suffix.strip():
        return b"\n", 0, None, False
    if not first_line.strip():
        # the cursor ends its line: the next code line's indentation is what must fit
        for line in suffix.split(b"\n")[1:]:
            body = line.lstrip(b" \t\f")
            if body and not body.startswith(b"#"):
                return b"\n", 0, indent_width(line[: len(line) - len(body)]), False
        return b"\n", 0, None, False
    lexer = PyLexer()
    depth = closes = 0
    end = len(suffix)
    pos = 0
    # feed line by line until the suffix's first logical line has ended
    while pos < len(suffix):
        nl = suffix.find(b"\n", pos)
        nl = len(suffix) if nl < 0 else nl + 1
        lexer.feed(suffix[pos:nl])
        pos = nl
        if lexer.line_ends:
            end = pos
            break
    lexer.feed(b"\n")
    lexemes = lexer.lexemes[: lexer.line_ends[0]] if lexer.line_ends else lexer.lexemes
    for lx in lexemes:
        if lx.kind != OP or lx.end - lx.start != 1:
            continue
        c = suffix[lx.start]
        if c in OPENERS:
            depth += 1
        elif c in CLOSERS:
            if depth:
                depth -= 1
            else:
                closes += 1
    body = first_line.lstrip(b" \t\f")
    return suffix[:end], closes, indent_width(first_line[: len(first_line) - len(body)]), True
