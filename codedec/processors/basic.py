"""Small, real processors: a minimum completion length and banned tokens.

- ``MinNewTokens(n, stop_ids)``: the stop ids cannot end a completion before ``n`` tokens
  (an editor asked for a completion; an immediate EOS shows nothing).
- ``BannedTokens(ids)``: ids that are never generated — e.g. ``no-fences``, every token whose text
  contains a Markdown code fence: the instruct model likes to escape into Markdown prose.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from codedec.processors.base import StatefulProcessor
from codedec.vocab import Vocab


class MinNewTokens(StatefulProcessor):
    """Masks ``stop_ids`` while fewer than ``n`` ids have been accepted."""

    derived_state = False

    def __init__(self, n: int, stop_ids: Iterable[int]) -> None:
        super().__init__()
        if n < 0:
            raise ValueError(f"min new tokens must be >= 0, got {n}")
        self.n = n
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)

    def process_row(self, row: torch.Tensor) -> torch.Tensor:
        if len(self.ids) >= self.n or self.stop_ids.numel() == 0:
            return row
        row = row.clone()
        row[self.stop_ids] = float("-inf")
        return row



class BannedTokens(StatefulProcessor):
    """Masks a fixed set of ids at every position."""

    derived_state = False

    def __init__(self, ids: Iterable[int]) -> None:
        super().__init__()
        self.banned = torch.tensor(sorted(set(ids)), dtype=torch.long)

    @classmethod
    def containing(cls, vocab: Vocab, needle: bytes) -> BannedTokens:
        """Ban every text token whose bytes contain ``needle``."""
        return cls(i for i, b in enumerate(vocab.token_bytes) if needle in b and i not in vocab.special)

    def process_row(self, row: torch.Tensor) -> torch.Tensor:
        if self.banned.numel() == 0:
            return row
        row = row.clone()
        row[self.banned] = float("-inf")
        return row
