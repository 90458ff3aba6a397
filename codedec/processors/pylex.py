"""An incremental, resumable Python lexer over bytes, for processors that follow generated code.

What it is: ``PyLexer.feed(data)`` appends bytes and lexes only what became final since the last
call, so following a generation costs O(new bytes) per token, not O(output). It tracks what the
code-aware processors need — the lexeme stream with coarse kinds, bracket nesting, logical-line
ends (``NEWLINE`` at depth 0, ``;``) and each logical line's indentation — and keeps a mark per
``feed`` so ``rollback(n)`` undoes the last n feeds exactly (a rejected draft leaves no trace).

A lexeme that touches the end of the buffer is *pending* (an identifier or a number may go on)
and is emitted once the next byte shows it ended; a string still open at the end is pending too,
and its scan resumes where it stopped, so a long docstring is scanned once.

What it is not: a validator. Bytes outside Python's lexical grammar become ``ERR`` lexemes and
unbalanced closers are ignored (the generation may close brackets the prefix opened). f-strings
are lexed as plain strings; ``fstring_field`` says whether the buffer ends inside one of their
``{...}`` expressions (and which bytes that expression has so far), for processors that follow
code there (the monitor's ``f"{obj.``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

KEYWORDS = frozenset(k.encode() for k in keyword.kwlist) | frozenset(
    k.encode() for k in keyword.softkwlist if k != "_"
)
OPENERS = {ord("("): ord(")"), ord("["): ord("]"), ord("{"): ord("}")}
CLOSERS = frozenset(OPENERS.values())

# Lexeme kinds (the second element of a lexeme tuple).
NAME, KEYWORD, NUMBER, STRING, OP, ERR = "N", "K", "0", "S", "O", "?"

_OPS = sorted(
    (
        "**= //= >>= <<= ... -> := ** // << >> <= >= == != += -= *= /= %= &= |= ^= @= "
        "+ - * / % @ & | ^ ~ < > = . , : ; ( ) [ ] { } !"
    ).split(),
    key=len,
    reverse=True,
)
_LONE_QUOTE = re.compile(rb"[rRbBuUfFtT]{0,2}('''|\"\"\"|'|\")\Z")
# operators that are a proper prefix of a longer one: undecided at the end of the buffer
_EXTENSIBLE = frozenset(o.encode() for o in _OPS if any(p != o and p.startswith(o) for p in _OPS))
_TOKEN = re.compile(
    rb"(?P<ws>[ \t\f]+)"
    rb"|(?P<cont>\\\r?\n)"
    rb"|(?P<nl>\r?\n|\r)"
    rb"|(?P<comment>\#[^\r\n]*)"
    rb"|(?P<str>(?:[rRbBuUfFtT]{1,2})?(?:'''|\"\"\"|'|\"))"
    rb"|(?P<name>[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)"
    rb"|(?P<num>(?:0[xXoObB][0-9a-fA-F_]*|(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]*)?[jJ]?))"
    rb"|(?P<op>" + b"|".join(re.escape(o.encode()) for o in _OPS) + rb")"
    rb"|(?P<err>.)",
    re.DOTALL,
)
_STR_STOP = {q: re.compile(rb"[\\\r\n" + q + rb"]") for q in (b"'", b'"')}


@dataclass(frozen=True)
class Lexeme:
    """One lexeme: ``kind`` (see the constants), ``start``/``end`` offsets in the lexer's buffer,
    ``line`` the index of the logical line it belongs to."""

    kind: str
    start: int
    end: int
    line: int


def indent_width(ws: bytes) -> int:
    """Column of the first non-blank byte after the whitespace ``ws`` (tabs to multiples of 8)."""
    col = 0
    for b in ws:
        col = (col // 8 + 1) * 8 if b == 9 else col + 1
    return col


class PyLexer:
    """Incremental lexer (see the module docstring).

    Public state, read by processors: ``buf`` (all bytes fed), ``lexemes`` (final lexemes),
    ``line_ends`` (lexeme index one past each finished logical line), ``line_indents`` (column
    of each logical line's first lexeme; one entry per line started), ``stack`` (open brackets),
    ``in_string`` (a string is open at the end of the buffer), ``in_comment``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # first byte not yet part of a final lexeme (or skipped whitespace)
        self.stack = b""  # open brackets, innermost last
        self.lexemes: list[Lexeme] = []
        self.line_ends: list[int] = []
        self.line_indents: list[int] = []
        self.line_open = False  # the current logical line has a lexeme
        self.line_ws_start = 0  # start of the whitespace before the current line's first lexeme
        self._str: tuple[int, bytes] | None = None  # (start, quote) of a string open at the end
        self._str_scan = 0  # where the scan of that string resumes
        self._marks: list[tuple] = []

    # --- life cycle ------------------------------------------------------------------------
    def _state(self) -> tuple:
        return (
            len(self.buf), self.pos, self.stack, len(self.lexemes), len(self.line_ends),
            len(self.line_indents), self.line_open, self.line_ws_start, self._str,
            self._str_scan,
        )

    def feed(self, data: bytes) -> int:
        """Append ``data`` and lex what became final; returns how many lexemes were added."""
        self._marks.append(self._state())
        before = len(self.lexemes)
        if data:
            self.buf += data
            self._lex()
        return len(self.lexemes) - before

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` ``feed`` calls."""
        if not 0 <= n <= len(self._marks):
            raise ValueError(f"rollback({n}) after {len(self._marks)} feeds")
        if n == 0:
            return
        (nbuf, self.pos, self.stack, nlex, nends, nind, self.line_open, self.line_ws_start,
         self._str, self._str_scan) = self._marks[-n]
        del self._marks[-n:]
        del self.buf[nbuf:]
        del self.lexemes[nlex:]
        del self.line_ends[nends:]
        del self.line_indents[nind:]

    def copy(self) -> PyLexer:
        other = PyLexer.__new__(PyLexer)
        other.__dict__.update(self.__dict__)
        other.buf = bytearray(self.buf)
        other.lexemes = list(self.lexemes)
        other.line_ends = list(self.line_ends)
        other.line_indents = list(self.line_indents)
        other._marks = list(self._marks)
        return other

    # --- queries ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.stack)

    @property
    def in_string(self) -> bool:
        return bool(self.open_quote)

    @property
    def open_quote(self) -> bytes:
        """The quote of the string open at the end of the buffer (b"" when none). A lone quote at
        the very end (lexing waits: it may become a triple quote) counts as an open string."""
        if self._str is not None:
            return self._str[1]
        m = _LONE_QUOTE.match(self.buf, self.pos)
        return m.group(1) if m else b""

    def fstring_field(self) -> tuple[int, bytes] | None:
        """(offset in ``buf`` where the expression starts, its bytes so far) when the buffer ends
        inside the expression part of an open f-string's (or t-string's) replacement field —
        ``f"a {obj.na`` gives the offset of ``o`` and ``b"obj.na"``; None otherwise (not in such
        a string, between fields, in a field's ``!r`` / ``:spec`` part)."""
        if self._str is None:
            return None
        start, quote = self._str
        opening = bytes(self.buf[start : start + 3 + len(quote)])
        letters = opening[: opening.find(quote[:1])]
        if not set(letters.lower()) & {ord("f"), ord("t")}:
            return None
        return _open_field(self.buf, start + len(letters) + len(quote))

    @property
    def in_comment(self) -> bool:
        return self.buf.startswith(b"#", self.pos) and b"\n" not in self.buf[self.pos :]

    def at_line_start(self) -> bool:
        """Only whitespace since the last logical line ended (a statement may start here)."""
        return not self.line_open and not self.stack and not self.buf[self.pos :].strip()

    def blank_columns(self) -> int:
        """Columns of blanks after the last newline (the indentation so far, at a line start)."""
        return indent_width(self.buf[self.buf.rfind(b"\n") + 1 :].rstrip(b"\r\f"))

    def lexeme_bytes(self, lx: Lexeme) -> bytes:
        return bytes(self.buf[lx.start : lx.end])

    def pending(self) -> bytes:
        """The bytes after the last final lexeme (a partial lexeme, whitespace, an open string)."""
        return bytes(self.buf[self.pos :])

    # --- the scanner -----------------------------------------------------------------------
    def _emit(self, kind: str, start: int, end: int) -> None:
        if not self.line_open:
            self.line_open = True
            ws = self.buf[self.line_ws_start : start]
            ws = ws[ws.rfind(b"\n") + 1 :]
            self.line_indents.append(indent_width(ws))
        self.lexemes.append(Lexeme(kind, start, end, len(self.line_ends)))

    def _end_line(self, at: int) -> None:
        if self.line_open:
            self.line_ends.append(len(self.lexemes))
            self.line_open = False
        self.line_ws_start = at

    def _lex(self) -> None:
        buf, n = self.buf, len(self.buf)
        while self.pos < n:
            pos = self.pos
            if self._str is not None:
                if not self._string():
                    return
                continue
            m = _TOKEN.match(buf, pos)
            kind = m.lastgroup
            end = m.end()
            if kind == "ws":
                self.pos = end
                continue
            if kind == "cont":
                self.pos = end
                continue
            if kind == "nl":
                if end == n and buf[end - 1] == 13:  # "\r" may be the first half of "\r\n"
                    return
                self.pos = end
                if not self.stack:
                    self._end_line(end)
                continue
            if end == n and (kind in ("comment", "name", "num") or (kind == "op" and m.group() in _EXTENSIBLE)):
                return  # may go on with the next bytes
            if kind == "comment":
                self.pos = end
                continue
            if kind == "str":
                if end == n or (end + 1 == n and buf[end] == buf[end - 1]):
                    return  # a quote at the end may still become a triple quote
                quote = bytes(buf[pos:end]).lstrip(b"rRbBuUfFtT")
                self._str, self._str_scan = (pos, quote), end
                if not self._string():
                    return
                continue
            if kind == "name":
                word = bytes(buf[pos:end])
                self._emit(KEYWORD if word in KEYWORDS else NAME, pos, end)
            elif kind == "num":
                self._emit(NUMBER, pos, end)
            elif kind == "op":
                self._emit(OP, pos, end)
                c = buf[pos]
                if end - pos == 1 and c in OPENERS:
                    self.stack += bytes([c])
                elif end - pos == 1 and c in CLOSERS:
                    if self.stack and OPENERS[self.stack[-1]] == c:
                        self.stack = self.stack[:-1]
                    elif self.stack:  # a mismatched closer: drop to the matching opener if any
                        idx = max(self.stack.rfind(o) for o, cl in OPENERS.items() if cl == c)
                        self.stack = self.stack[: max(idx, 0)]
                elif end - pos == 1 and c == ord(";") and not self.stack:
                    self._end_line(end)
            else:
                self._emit(ERR, pos, end)
            self.pos = end

    def _string(self) -> bool:
        """Go on scanning the open string ``self._str`` from ``self._str_scan``; True once it is
        closed (and emitted), False while it is still open at the end of the buffer.

        A single-quoted string that meets a newline ends there (unterminated: the lexer moves
        on, as Python's tokenizer reports the error at that point)."""
        start, quote = self._str
        buf, n = self.buf, len(self.buf)
        stop = _STR_STOP[quote[:1]]
        i = self._str_scan
        while True:
            m = stop.search(buf, i)
            if m is None:
                self._str_scan = n
                return False
            j = m.start()
            c = buf[j]
            if c == 92:  # a backslash escapes the next byte ("\\\r\n" as one)
                if j + 1 >= n or (buf[j + 1] == 13 and j + 2 >= n):
                    self._str_scan = j
                    return False
                i = j + (3 if buf[j + 1 : j + 3] == b"\r\n" else 2)
                continue
            if c in (10, 13):
                if len(quote) == 3:
                    i = j + 1
                    continue
                end = j
                break
            if len(quote) == 1:
                end = j + 1
                break
            if buf[j : j + 3] == quote:
                end = j + 3
                break
            if j + 3 > n and buf[j:] == quote[: n - j]:  # maybe the start of the closing quotes
                self._str_scan = j
                return False
            i = j + 1
        self._str = None
        self._str_scan = 0
        self._emit(STRING, start, end)
        self.pos = end
        return True


def _open_field(buf: bytearray, i: int) -> tuple[int, bytes] | None:
    """The open replacement field's expression in the f-string body ``buf[i:]`` (see
    ``PyLexer.fstring_field``): ``{{`` is a literal brace; in a field, brackets nest, quotes open
    strings, and ``!``/``:`` at the field's top level end the expression (``!=`` does not)."""
    n = len(buf)
    field = None  # start of the open field's expression
    depth, inner, spec = 0, 0, False
    while i < n:
        c = buf[i]
        if field is None:
            if c == 92:  # an escape in the literal part
                i += 2
                continue
            if c == 123:  # "{"
                if i + 1 < n and buf[i + 1] == 123:
                    i += 2
                    continue
                field, depth, inner, spec = i + 1, 0, 0, False
            i += 1
            continue
        if inner:  # a string inside the expression
            if c == 92:
                i += 2
                continue
            if c == inner:
                inner = 0
        elif spec:
            if c == 123:  # a nested field in the format spec
                field, depth, spec = i + 1, 0, False
            elif c == 125:
                field = None
        elif c in (34, 39):
            inner = c
        elif c in (40, 91, 123):
            depth += 1
        elif c in (41, 93):
            depth = max(0, depth - 1)
        elif c == 125:
            if depth:
                depth -= 1
            else:
                field = None
        elif depth == 0 and (c == 58 or (c == 33 and buf[i + 1 : i + 2] != b"=")):
            spec = True
        i += 1
    if field is None or spec or inner:
        return None
    return field, bytes(buf[field:])
