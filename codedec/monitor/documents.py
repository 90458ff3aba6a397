"""Text documents as a language server sees them: LSP positions and incremental edits.

- ``position(text, offset)``: the LSP ``Position`` (line, UTF-16 column) of a character offset;
- ``incremental_change(old, new)``: one range replacement turning ``old`` into ``new`` (the
  common prefix and suffix are kept), the content change of an incremental ``didChange`` — the
  server re-reads only the edited span, which is what keeps a warm query fast.

Pure functions, no I/O; the client in ``client.py`` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def position(text: str, offset: int) -> tuple[int, int]:
    """(line, UTF-16 character) of character ``offset`` in ``text``."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} outside a text of {len(text)} characters")
    line = text.count("\n", 0, offset)
    start = text.rfind("\n", 0, offset) + 1
    return line, utf16_len(text[start:offset])


def end_position(text: str) -> tuple[int, int]:
    return position(text, len(text))


@dataclass(frozen=True)
class Change:
    """Replace ``old[start:end]`` (as LSP positions ``start_pos``/``end_pos``) by ``text``."""

    start_pos: tuple[int, int]
    end_pos: tuple[int, int]
    text: str


def incremental_change(old: str, new: str) -> Change | None:
    """The single range edit from ``old`` to ``new`` (None when they are equal)."""
    if old == new:
        return None
    n = min(len(old), len(new))
    pre = 0
    while pre < n and old[pre] == new[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and old[len(old) - 1 - suf] == new[len(new) - 1 - suf]:
        suf += 1
    # never split "\r\n" (a server counts it as one line break)
    if pre and old[pre - 1] == "\r":
        pre -= 1
    return Change(position(old, pre), position(old, len(old) - suf), new[pre : len(new) - suf])


def apply_change(old: str, change: Change) -> str:
    """Apply ``change`` to ``old`` (the server's view; used in tests)."""
    lines = old.split("\n")

    def offset(pos: tuple[int, int]) -> int:
        line, col = pos
        base = sum(len(x) + 1 for x in lines[:line])
        text = lines[line] if line < len(lines) else ""
        units = 0
        for i, ch in enumerate(text):
            if units >= col:
                return base + i
            units += utf16_len(ch)
        return base + len(text)

    return old[: offset(change.start_pos)] + change.text + old[offset(change.end_pos) :]
