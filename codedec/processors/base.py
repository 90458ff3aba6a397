"""The logits-processor protocol and the chain the engine applies at every step (DESIGN §1).

A processor sees ``logits`` [P, V] for P >= 1 candidate positions and returns logits of the same
shape. Row 0 is the next position after everything the processor has been ``advance``d through;
row i (i > 0) is the position after additionally taking ``draft[:i]`` — the tokens a speculative
draft or a lookahead proposes. So one call scores a whole draft, and ``len(draft) == P - 1``.

Life cycle (shared with the cache and the detokenizer):
- ``advance(ids)``  the ids were accepted into the output: update state;
- ``rollback(n)``   forget the last n accepted ids (exactly as if never advanced);
- ``fork()``        an independent copy for a branch;
- ``reset()``       back to the state at construction (a new request).

Hard masks (``-inf``) commute with each other; soft penalties should come first in a chain so that
masks see the final scores. Each processor alone never leaves a row without a token, but two hard
masks can disagree (the monitor allows only names where token healing needs a newline): the chain
then ignores the later processor for that row, so a completion is never blocked. ``StatefulProcessor`` implements the P-row contract on top of a single-
row ``process_row`` by forking and advancing, so simple processors only write the one-row case.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

log = logging.getLogger(__name__)


@runtime_checkable
class LogitsProcessor(Protocol):
    def __call__(self, logits: torch.Tensor, draft: Sequence[int] = ()) -> torch.Tensor: ...

    def advance(self, ids: Sequence[int]) -> None: ...

    def rollback(self, n: int) -> None: ...

    def fork(self) -> LogitsProcessor: ...

    def reset(self) -> None: ...


def check_rows(logits: torch.Tensor, draft: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``logits`` is [P, V] with ``P == len(draft) + 1``."""
    if logits.dim() != 2 or logits.shape[0] != len(draft) + 1:
        raise ValueError(
            f"logits must be [len(draft) + 1, V] = [{len(draft) + 1}, V], got {tuple(logits.shape)}"
        )


class StatefulProcessor:
    """Base for processors whose state is the list of accepted ids (plus what derives from it).

    Subclasses implement ``process_row(row)`` for the current state and may override
    ``_on_advance`` to keep derived state incrementally. ``rollback`` replays the kept ids from a
    fresh state, so a subclass with derived state stays correct without extra code; a subclass
    whose only state is ``self.ids`` sets ``derived_state = False`` and rollback just truncates.
    """

    derived_state = True

    def __init__(self) -> None:
        self.ids: list[int] = []

    # --- subclass hooks -------------------------------------------------------------------
    def process_row(self, row: torch.Tensor) -> torch.Tensor:  # row: [V]
        raise NotImplementedError

    def _on_advance(self, ids: Sequence[int]) -> None:
        """Update derived state for newly accepted ``ids`` (``self.ids`` already extended)."""

    def _on_reset(self) -> None:
        """Clear derived state."""

    # --- protocol -------------------------------------------------------------------------
    def __call__(self, logits: torch.Tensor, draft: Sequence[int] = ()) -> torch.Tensor:
        check_rows(logits, draft)
        if not draft:
            return self.process_row(logits[0]).unsqueeze(0)
        branch = self.fork()
        rows = []
        for i in range(logits.shape[0]):
            rows.append(branch.process_row(logits[i]))
            if i < len(draft):
                branch.advance([draft[i]])
        return torch.stack(rows)  # [P, V]

    def advance(self, ids: Sequence[int]) -> None:
        ids = [int(i) for i in ids]
        self.ids.extend(ids)
        self._on_advance(ids)

    def rollback(self, n: int) -> None:
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"rollback({n}) after {len(self.ids)} ids")
        if n == 0:
            return
        if not self.derived_state:
            del self.ids[-n:]
            return
        kept = self.ids[:-n]
        self.reset()
        self.advance(kept)

    def fork(self) -> StatefulProcessor:
        return copy.deepcopy(self)

    def reset(self) -> None:
        self.ids = []
        self._on_reset()


class ProcessorChain:
    """Applies processors in order; forwards the life-cycle calls to each of them."""

    def __init__(self, processors: Sequence[LogitsProcessor] = ()) -> None:
        self.processors = list(processors)

    def __len__(self) -> int:
        return len(self.processors)

    def __call__(self, logits: torch.Tensor, draft: Sequence[int] = ()) -> torch.Tensor:
        check_rows(logits, draft)
        for proc in self.processors:
            out = proc(logits, draft)
            if out is not logits:
                dead = torch.isneginf(out).all(dim=-1) & ~torch.isneginf(logits).all(dim=-1)  # [P]
                if bool(dead.any()):  # this processor and the earlier ones disagree: skip it there
                    log.info("%s left no token for %d row(s): ignored there", type(proc).__name__,
                             int(dead.sum()))
                    out = out.clone()
                    out[dead] = logits[dead]
            logits = out
        return logits

    def advance(self, ids: Sequence[int]) -> None:
        for proc in self.processors:
            proc.advance(ids)

    def rollback(self, n: int) -> None:
        for proc in self.processors:
            proc.rollback(n)

    def fork(self) -> ProcessorChain:
        return ProcessorChain([proc.fork() for proc in self.processors])

    def reset(self) -> None:
        for proc in self.processors:
            proc.reset()
