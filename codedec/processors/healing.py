"""Token healing: the first generated tokens must re-create the text the prompt was backed up by.

A cursor rarely sits on a token boundary the model saw in training: after a bare newline the model
expects a newline+indent token, inside an identifier half a word. ``codedec.context.healing`` backs
the prompt up by its last token(s); this processor then allows only tokens that are consistent
with the removed bytes ``heal`` — a token either covers all the still-pending bytes (and may go on
past them) or is a prefix of them. Once the pending bytes are produced it lets everything through.

The caller strips ``heal`` from the front of the generated text (the decode state does, given
``SamplingParams(skip_text=heal)``; ``codedec.prepare`` sets both up).
"""

from __future__ import annotations

import torch

from codedec.processors.base import StatefulProcessor
from codedec.vocab import Vocab


class HealingProcessor(StatefulProcessor):
    """Constrains the start of a generation to extend ``heal`` bytes (see module docstring)."""

    def __init__(self, vocab: Vocab, heal: bytes) -> None:
        super().__init__()
        self.vocab = vocab
        self.heal = heal
        self.pending = heal
        self._allowed_cache: dict[bytes, torch.Tensor] = {}

    def _on_advance(self, ids) -> None:
        for i in ids:
            if not self.pending:
                return
            piece = self.vocab.token_bytes[i] if i < len(self.vocab) else b""
            if piece.startswith(self.pending):
                self.pending = b""
            elif self.pending.startswith(piece) and piece:
                self.pending = self.pending[len(piece) :]
            else:  # accepted a token the mask would have refused: the constraint is void
                self.pending = b""

    def _on_reset(self) -> None:
        self.pending = self.heal

    def _allowed(self, pending: bytes) -> torch.Tensor:
        allowed = self._allowed_cache.get(pending)
        if allowed is None:
            allowed = torch.tensor(self.vocab.ids_compatible_with(pending), dtype=torch.long)
            self._allowed_cache[pending] = allowed
        return allowed

    def process_row(self, row: torch.Tensor) -> torch.Tensor:
        if not self.pending:
            return row
        allowed = self._allowed(self.pending)
        allowed = allowed[allowed < row.shape[-1]]  # the tokenizer may know ids the model lacks
        out = torch.full_like(row, float("-inf"))
        out[allowed] = row[allowed]
        return out

    def fork(self) -> HealingProcessor:
        other = HealingProcessor.__new__(HealingProcessor)
        other.__dict__.update(self.__dict__)
        other.ids = list(self.ids)
        return other  # vocab and the mask cache are shared read-only
