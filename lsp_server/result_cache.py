"""Recently shown completions, with typed-ahead reuse (llama.vim's cache look-back).

A completion ``C`` shown at a cursor with text ``P|S`` stays valid while the user types its first
characters: at ``P + C[:i] | S`` the rest ``C[i:]`` is served without a model call. ``get`` looks back
over the last ``lookback`` characters before the cursor for an entry whose text starts with what
was typed since. Keys are the end of the prefix (``context`` characters) and the start of the
suffix, so a change far from the cursor does not invalidate, and a change near it does.

What it is not: the KV cache (``codedec.cache``), which saves prompt encoding, not model calls.
"""

from __future__ import annotations

from collections import OrderedDict


class ResultCache:
    """LRU map (prefix tail, suffix head) -> completion text, with typed-ahead lookup."""

    def __init__(self, max_entries: int = 256, lookback: int = 64, context: int = 1024) -> None:
        if max_entries < 1 or lookback < 0 or context < 1:
            raise ValueError(
                f"bad cache sizes: max_entries={max_entries}, lookback={lookback}, context={context}"
            )
        self.max_entries = max_entries
        self.lookback = lookback
        self.context = context
        self._entries: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _key(self, prefix: str, suffix: str) -> tuple[str, str]:
        return prefix[-self.context :], suffix[:256]

    def put(self, prefix: str, suffix: str, text: str) -> None:
        """Remember that ``text`` completes the cursor between ``prefix`` and ``suffix``."""
        if not text:
            return
        key = self._key(prefix, suffix)
        self._entries[key] = text
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, prefix: str, suffix: str) -> str | None:
        """The completion to show at this cursor, from an exact entry or one typed into; None if
        nothing applies (a suggestion typed to its end is not served again)."""
        head = suffix[:256]
        window = prefix[-(self.context + self.lookback) :]
        for i in range(min(self.lookback, len(prefix)) + 1):
            before = window[: len(window) - i][-self.context :]
            text = self._entries.get((before, head))
            if text is None:
                continue
            typed = window[len(window) - i :]
            if text.startswith(typed) and len(text) > i:
                self._entries.move_to_end((before, head))
                self.hits += 1
                return text[i:]
        self.misses += 1
        return None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
