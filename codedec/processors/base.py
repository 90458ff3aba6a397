"""The logits-processor protocol and the chain the engine applies at every step (DESIGN §1).

A processor sees ``logits`` [P, V] for P >= 1 candidate positions and returns logits of the same
shape. Row 0 is the next position after everything the processor has been ``advance``d through.
The other rows score a draft tree (``draft`` tokens, ``parents``): row j + 1 is the position after
taking the path from the root to draft node j — node j's ancestors, then ``draft[j]``.
``parents[j]`` is -1 (a child of the root) or an earlier node (``< j``); ``parents=None`` means a
chain (``parents[j] = j - 1``: row i follows ``draft[:i]``, the tokens a speculative draft or a
lookahead proposes). So one call scores a whole draft, and ``len(draft) == P - 1``.

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
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from codedec import draft_tree

log = logging.getLogger(__name__)


@runtime_checkable
class LogitsProcessor(Protocol):
    def __call__(
        self, logits: torch.Tensor, draft: Sequence[int] = (), parents: Sequence[int] | None = None
    ) -> torch.Tensor: ...

    def advance(self, ids: Sequence[int]) -> None: ...

    def rollback(self, n: int) -> None: ...

    def fork(self) -> LogitsProcessor: ...

    def reset(self) -> None: ...


def check_rows(logits: torch.Tensor, draft: Sequence[int], parents: Sequence[int] | None = None) -> None:
    """Raise ``ValueError`` unless ``logits`` is [P, V] with ``P == len(draft) + 1`` and
    ``parents`` (when given) names, for each node, -1 or an earlier node."""
    if logits.dim() != 2 or logits.shape[0] != len(draft) + 1:
        raise ValueError(
            f"logits must be [len(draft) + 1, V] = [{len(draft) + 1}, V], got {tuple(logits.shape)}"
        )
    if parents is not None:
        if len(parents) != len(draft):
            raise ValueError(f"{len(draft)} draft tokens but {len(parents)} parents")
        draft_tree.check_parents(parents)


def walk_draft(
    proc: LogitsProcessor,
    logits: torch.Tensor,
    draft: Sequence[int],
    parents: Sequence[int] | None,
    score: Callable[[torch.Tensor], torch.Tensor | None],
) -> torch.Tensor:
    """Score every row of ``logits`` [P, V] at its own path through the draft (module docstring).

    ``score(row)`` scores one row [V] at ``proc``'s current state and returns the new row, or
    ``None`` to leave it unchanged. Algorithm: row 0 at the current state; for node j, roll back
    to the longest common prefix of the advanced path and node j's path, advance the rest of
    node j's path, score row j + 1. Finally (also on an exception) roll back everything
    advanced. Returns ``logits`` itself when no row changed, else a new tensor.
    """
    check_rows(logits, draft, parents)
    if not draft:  # the every-step case: one row, no walk
        new = score(logits[0])
        return logits if new is None else new.unsqueeze(0)
    paths = draft_tree.paths(parents if parents is not None else range(-1, len(draft) - 1))
    out = None
    on: list[int] = []  # draft nodes ``proc`` is currently advanced through, root first
    try:
        for r in range(logits.shape[0]):
            if r:
                path = paths[r - 1]
                keep = 0
                while keep < len(on) and keep < len(path) and on[keep] == path[keep]:
                    keep += 1
                if len(on) > keep:
                    proc.rollback(len(on) - keep)
                    del on[keep:]
                for j in path[keep:]:
                    proc.advance([draft[j]])
                    on.append(j)
            new = score(logits[r])
            if new is not None:
                if out is None:
                    out = logits.clone()
                out[r] = new
    finally:
        if on:
            proc.rollback(len(on))
    return logits if out is None else out


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
    def __call__(
        self, logits: torch.Tensor, draft: Sequence[int] = (), parents: Sequence[int] | None = None
    ) -> torch.Tensor:
        # A processor with derived state replays on rollback: walk a draft on a fork, which is cheaper.
        walker = self.fork() if draft and self.derived_state else self
        return walk_draft(walker, logits, draft, parents, walker.process_row)

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
    """Applies processors in order; forwards the life-cycle calls to each of them.

    ``views``: shared per-request state the processors read (``textview.TextView``): the chain
    moves them before its processors on ``advance``/``rollback``/``reset`` (processors read the
    lexer while they update), and a fork gets forked views its forked processors point at. A
    draft is scored with one walk of the whole chain (``walk_draft`` over the chain), each row
    by every processor in order at that row's path.
    """

    def __init__(self, processors: Sequence[LogitsProcessor] = (), views: Sequence = ()) -> None:
        self.processors = list(processors)
        self.views = list(views)

    def __len__(self) -> int:
        return len(self.processors)

    def reports(self) -> dict[str, dict]:
        """What each constraint that can switch itself off did (``report()``), by its name:
        on/off and why, answered on time/late/timed out — so a result never passes for
        constrained when it was not."""
        out = {}
        for proc in self.processors:
            report = getattr(proc, "report", None)
            if report is not None:
                out[getattr(proc, "name", type(proc).__name__.removesuffix("Processor").lower())] = report()
        return out

    def __call__(
        self, logits: torch.Tensor, draft: Sequence[int] = (), parents: Sequence[int] | None = None
    ) -> torch.Tensor:
        if draft:
            return walk_draft(self, logits, draft, parents, lambda row: self._apply(row.unsqueeze(0))[0])
        check_rows(logits, draft)
        return self._apply(logits)

    def _apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Every processor in order on [P, V] rows at the chain's current state."""
        for proc in self.processors:
            out = proc(logits)
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
        for view in self.views:
            view.advance(ids)
        for proc in self.processors:
            proc.advance(ids)

    def rollback(self, n: int) -> None:
        for view in self.views:
            view.rollback(n)
        for proc in self.processors:
            proc.rollback(n)

    def fork(self) -> ProcessorChain:
        views = {id(v): v.fork() for v in self.views}
        procs = []
        for proc in self.processors:
            other = proc.fork()
            shared = getattr(proc, "view", None)
            if shared is not None and id(shared) in views and not getattr(proc, "owns_view", True):
                other.view = views[id(shared)]
            procs.append(other)
        return ProcessorChain(procs, list(views.values()))

    def reset(self) -> None:
        for view in self.views:
            view.reset()
        for proc in self.processors:
            proc.reset()
