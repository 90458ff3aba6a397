"""Text-level stop conditions that must work across token boundaries.

``TextStopper.check(text)`` looks at the whole visible completion so far and says how much of it is
final: everything before the first stop string (or newline in single-line mode), minus a held-back
tail that could still grow into a stop string. So a stop string split over two tokens is never
streamed out half-way, and the completion ends exactly before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopCheck:
    safe_len: int  # text[:safe_len] can be shown now and will not change
    stopped: bool  # a stop string was found at text[safe_len]


class TextStopper:
    """Finds the earliest stop string in a growing text (see module docstring)."""

    def __init__(self, stop_strings: Sequence[str] = (), single_line: bool = False) -> None:
        stops = [s for s in stop_strings if s]
        if single_line:
            stops.append("\n")
        self.stops = tuple(dict.fromkeys(stops))
        self._longest = max((len(s) for s in self.stops), default=0)
        self._searched = 0  # text[:_searched] holds no complete stop string

    def reset(self) -> None:
        self._searched = 0

    def check(self, text: str) -> StopCheck:
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
