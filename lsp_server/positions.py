"""LSP positions <-> Python string offsets, in the negotiated position encoding.

An LSP ``Position`` is (line, character) where ``character`` counts UTF-16 code units by default
(``utf-8`` bytes or ``utf-32`` code points when negotiated). Python strings index code points, so
an emoji is 1 Python character but 2 UTF-16 units. Lines end at ``\\r\\n``, ``\\r`` or ``\\n``, as the
specification says (``codedec.text.EOL``).

What it is not: a document store (``codedec.service.DocumentStore`` holds the text).
"""

from __future__ import annotations

from codedec.text import EOL

UTF16, UTF8, UTF32 = "utf-16", "utf-8", "utf-32"


def units(text: str, encoding: str = UTF16) -> int:
    """Length of ``text`` in the code units of ``encoding``."""
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8"))
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _column_to_chars(line: str, character: int, encoding: str) -> int:
    """Python characters of ``line`` covered by ``character`` code units (clamped to the line)."""
    if encoding == UTF32:
        return min(character, len(line))
    count = 0
    for i, c in enumerate(line):
        if count >= character:
            return i
        count += units(c, encoding)
    return len(line)


def offset_at(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """Offset in ``text`` of the position (``line``, ``character``).

    A line past the end maps to the end of the text; a character past the end of its line maps to
    the end of the line (as the LSP specification asks). Negative values raise ``ValueError``.
    """
    if line < 0 or character < 0:
        raise ValueError(f"negative position ({line}, {character})")
    start = 0
    if line and "\r" not in text:  # the common case, at C speed
        head = text.split("\n", line)
        if len(head) <= line:
            return len(text)
        start = len(text) - len(head[-1])
    elif line:
        for n, m in enumerate(EOL.finditer(text), 1):
            if n == line:
                start = m.end()
                break
        else:
            return len(text)
    m = EOL.search(text, start)
    content = text[start : m.start() if m else len(text)]
    return start + _column_to_chars(content, character, encoding)


def position_at(text: str, offset: int, encoding: str = UTF16) -> tuple[int, int]:
    """(line, character) of ``offset`` in ``text`` (clamped to the text; inside a ``\\r\\n``: the
    end of its line)."""
    offset = max(0, min(offset, len(text)))
    line, start, end = 0, 0, offset
    for m in EOL.finditer(text):
        if m.end() > offset:
            end = min(offset, m.start())
            break
        line, start = line + 1, m.end()
    return line, units(text[start:end], encoding)
