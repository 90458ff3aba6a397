"""Incremental, UTF-8-safe detokenizer over the byte table of ``codedec.vocab``.

What it is: ``push(ids) -> str`` returns exactly the new text those ids complete. Bytes of a
character that is split across tokens (emoji, CJK, byte-fallback pieces) are held back until the
character is whole, so a streamed completion never shows ``\ufffd`` mid-way; ``flush()`` at the end
of a generation releases whatever is left (an unfinished character becomes ``\ufffd`` only then).
Special tokens (EOS, FIM markers) produce no text.

It follows the component life cycle of DESIGN §1: ``fork()`` / ``rollback(n)`` / ``reset()``, so a
rejected draft or a lookahead branch leaves no trace in the text.

What it is not: a general ``tokenizer.decode`` replacement. It never applies a tokenizer's cleanup
rules (stripping the first space, ``clean_up_tokenization_spaces``): a completion is a continuation,
and its bytes are exactly what the model produced.
"""

from __future__ import annotations

from collections.abc import Iterable

from codedec.vocab import Vocab


def _complete_prefix_len(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character.

    Only the last three bytes can belong to an unfinished character; invalid bytes elsewhere are
    left for ``decode(errors="replace")`` to handle.
    """
    n = len(data)
    for back in range(1, min(3, n) + 1):
        b = data[n - back]
        if b & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if b < 0xC0 or b >= 0xF8:  # ASCII or an invalid lead: nothing to wait for
            return n
        need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
        return n - back if back < need else n
    return n


class IncrementalDetokenizer:
    """Streams text for a growing list of token ids.

    State: ``ids`` (every id pushed), ``text`` (the text emitted so far) and the bytes still held
    back. Invariant: ``text.encode() + pending == b"".join(vocab bytes of ids)`` up to the
    replacement of invalid sequences.
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.reset()

    def reset(self) -> None:
        self.ids: list[int] = []
        self.text = ""
        self._pending = b""
        # (len(text), pending) before each pushed id, for rollback.
        self._marks: list[tuple[int, bytes]] = []

    def push(self, ids: Iterable[int]) -> str:
        """Append ``ids``; return the text they complete (may be ``""``)."""
        start = len(self.text)
        table, special = self.vocab.token_bytes, self.vocab.special
        for i in ids:
            self._marks.append((len(self.text), self._pending))
            self.ids.append(i)
            if i in special or i >= len(table):
                continue
            data = self._pending + table[i]
            cut = _complete_prefix_len(data)
            if cut:
                self.text += data[:cut].decode("utf-8", errors="replace")
            self._pending = data[cut:]
        return self.text[start:]

    def flush(self) -> str:
        """Release held-back bytes (an unfinished character becomes U+FFFD)."""
        if not self._pending:
            return ""
        tail = self._pending.decode("utf-8", errors="replace")
        self.text += tail
        self._pending = b""
        return tail

    def final_text(self) -> str:
        """``text`` plus the held-back bytes (an unfinished character as U+FFFD), without
        changing the state: unlike ``flush``, a rollback or a further push stays exact."""
        return self.text + self._pending.decode("utf-8", errors="replace") if self._pending else self.text

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` pushed ids and the text they produced."""
        if n < 0 or n > len(self.ids):
            raise ValueError(f"rollback({n}) with {len(self.ids)} ids pushed")
        if n == 0:
            return
        length, pending = self._marks[-n]
        del self._marks[-n:]
        del self.ids[-n:]
        self.text = self.text[:length]
        self._pending = pending

    def fork(self) -> IncrementalDetokenizer:
        """An independent copy: pushing to either leaves the other unchanged."""
        other = IncrementalDetokenizer.__new__(IncrementalDetokenizer)
        other.vocab = self.vocab
        other.ids = list(self.ids)
        other.text = self.text
        other._pending = self._pending
        other._marks = list(self._marks)
        return other
