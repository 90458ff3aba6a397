"""Checks of the processor protocol (codedec.processors.base) that every processor must pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def assert_fork_and_rollback_leave_no_trace(proc, logits: torch.Tensor, ids: Sequence[int]) -> None:
    """A fork advanced through ``ids`` does not change ``proc``; advancing ``proc`` and rolling
    back the same ids gives back exactly the rows it gave before."""
    before = proc(logits)
    branch = proc.fork()
    branch.advance(ids)
    assert torch.equal(proc(logits), before)
    proc.advance(ids)
    proc.rollback(len(ids))
    assert torch.equal(proc(logits), before)


def assert_draft_rows_match_sequential(proc, logits: torch.Tensor, draft: Sequence[int]) -> None:
    """Scoring ``logits`` [len(draft) + 1, V] with ``draft`` gives each row what a fork advanced
    through the draft one token at a time gives (and leaves ``proc`` as it was) — as a chain, and
    as trees (a binary tree and a star) over the same tokens, where row j + 1 is node j's path."""
    before = proc(logits[:1])
    rows = proc(logits, draft)
    seq = proc.fork()
    for i in range(len(draft) + 1):
        torch.testing.assert_close(rows[i], seq(logits[i : i + 1])[0])
        if i < len(draft):
            seq.advance([draft[i]])
    for parents in ([(j - 1) // 2 if j else -1 for j in range(len(draft))], [-1] * len(draft)):
        assert_tree_rows_match_sequential(proc, logits, draft, parents)
    torch.testing.assert_close(proc(logits[:1]), before)  # no trace


def assert_tree_rows_match_sequential(proc, logits: torch.Tensor, draft: Sequence[int], parents: Sequence[int]) -> None:
    """Row j + 1 of a tree-scored ``logits`` equals a fork advanced along node j's path."""
    rows = proc(logits, draft, parents)
    torch.testing.assert_close(rows[0], proc(logits[:1])[0])
    for j in range(len(draft)):
        path, k = [], j
        while k >= 0:
            path.append(draft[k])
            k = parents[k]
        seq = proc.fork()
        seq.advance(path[::-1])
        torch.testing.assert_close(rows[j + 1], seq(logits[j + 1 : j + 2])[0], msg=lambda m, j=j: f"node {j}: {m}")
