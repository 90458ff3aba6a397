"""Text-level stop conditions that must work across token boundaries.

``TextStopper.check(text)`` looks at the whole visible completion so far and says how much of it is
final: everything before the first stop string (or newline in single-line mode), minus a held-back
tail that could still grow into a stop string. So a stop string split over two tokens is never
streamed out half-way, and the completion ends exactly before it.

Life cycle (DESIGN §1): the decode state calls ``check`` once per accepted token, so
``rollback(n)`` undoes the last n checks and ``fork()`` copies; a rejected draft leaves no trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TAB_WIDTH = 4
_CLOSERS = ")]}"


@dataclass(frozen=True)
class StopCheck:
    safe_len: int  # text[:safe_len] can be shown now and will not change
    stopped: bool  # a stop string (or the block's end) was found at text[safe_len]
    block_end: bool = False  # the stop is a line indented less than ``min_indent``


class TextStopper:
    """Finds the earliest stop string in a growing text (see module docstring).

    ``min_indent`` (multi-line completions): the text also ends before the first line after its
    first whose content starts at fewer than ``min_indent`` columns (tabs count 4) — the end of
    the block the cursor is in (a completion of a function body ends where the function ends).
    Blank lines and lines starting with a closing bracket do not end it. A trailing newline plus
    shallow indentation is held back until the line's first character decides.
    """

    def __init__(self, stop_strings: Sequence[str] = (), single_line: bool = False,
                 min_indent: int | None = None) -> None:
        self.min_indent = min_indent if min_indent else None
        self._line_from = 0  # lines starting after text[_line_from:].find("\n") are undecided
        stops = [s for s in stop_strings if s]
        if single_line:
            stops.append("\n")
        self.stops = tuple(dict.fromkeys(stops))
        self._longest = max((len(s) for s in self.stops), default=0)
        self._searched = 0  # text[:_searched] holds no complete stop string
        self._marks: list[int] = []  # _searched before each check, for rollback

    def reset(self) -> None:
        self._searched = 0
        self._line_from = 0
        self._marks = []

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` checks (the tokens they looked at were taken back)."""
        if not 0 <= n <= len(self._marks):
            raise ValueError(f"rollback({n}) after {len(self._marks)} checks")
        if n:
            self._searched, self._line_from = self._marks[-n]
            del self._marks[-n:]

    def fork(self) -> TextStopper:
        """An independent copy."""
        other = TextStopper.__new__(TextStopper)
        other.__dict__.update(self.__dict__)
        other._marks = list(self._marks)
        return other

    def _block_end(self, text: str) -> tuple[int | None, int]:
        """(index of the newline that ends the block or None, length that is safe to show)."""
        i = self._line_from
        while (j := text.find("\n", i)) >= 0:
            k = j + 1
            while k < len(text) and text[k] in " \t":
                k += 1
            shallow = len(text[j + 1 : k].expandtabs(TAB_WIDTH)) < self.min_indent
            if k == len(text):  # the line's first character is still to come
                return None, j if shallow else len(text)
            self._line_from = j + 1
            if shallow and text[k] not in "\r\n" and text[k] not in _CLOSERS:
                return j, j
            i = j + 1
        return None, len(text)

    def check(self, text: str) -> StopCheck:
        self._marks.append((self._searched, self._line_from))
        if self.min_indent is not None:
            end, safe = self._block_end(text)
            if end is not None:
                earlier = self._check_strings(text[:end])  # a stop string before the block's end wins
                return earlier if earlier.stopped else StopCheck(end, True, block_end=True)
            if safe < len(text):
                return self._check_strings(text[:safe])
        return self._check_strings(text)

    def _check_strings(self, text: str) -> StopCheck:
        if not self.stops:
            return StopCheck(len(text), False)
        # A new match must end after _searched, so it starts after _searched - longest + 1.
        start = max(0, self._searched - self._longest + 1)
        hits = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            return StopCheck(min(hits), True)
        self._searched = len(text)
        hold = 0
        for s in self.stops:  # longest tail of text that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return StopCheck(len(text) - hold, False)
