"""Draft trees as parent lists — the one definition the tree forward and the processors share.

A draft of P nodes is given by ``parents``: ``parents[i]`` is -1 (a child of the cached context,
the root) or the index of an earlier node (``< i``), so nodes come in topological order and a
chain is ``[-1, 0, 1, ...]``. ``depths`` gives each node's distance from the root (its position
offset after the context), ``paths`` each node's root-to-node index path, ``ancestors`` the
ancestor-or-self matrix an attention mask is built from.

What it is not: a proposer (speculation builds the trees) or a verifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_parents(parents: Sequence[int]) -> None:
    """Raise ``ValueError`` unless every ``parents[i]`` is -1 or an earlier node."""
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise ValueError(f"parents[{i}] = {p}: a parent must be -1 or an earlier node (< {i})")


def depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node (a root child has depth 0); validates ``parents``."""
    check_parents(parents)
    out: list[int] = []
    for p in parents:
        out.append(0 if p < 0 else out[p] + 1)
    return out


def paths(parents: Sequence[int]) -> list[list[int]]:
    """Root-to-node index paths of every node (each ends with the node itself)."""
    out: list[list[int]] = []
    for j, p in enumerate(parents):
        out.append((out[p] if p >= 0 else []) + [j])
    return out


def ancestors(parents: Sequence[int]) -> torch.Tensor:
    """``anc[i, j]`` is True when node j is node i or one of its ancestors. -> bool [P, P]."""
    n = len(parents)
    anc = torch.eye(n, dtype=torch.bool)
    for i, p in enumerate(parents):
        if p >= 0:
            anc[i] |= anc[p]
    return anc
