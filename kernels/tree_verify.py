"""Tree verification for speculative decoding: which draft nodes the target accepts, and the KV
gather that keeps them (SuffixDecoding's verify step, ``codedec.speculate.verify``).

What it is: two Triton kernels with their launchers and pure-torch twins of the same signatures
(DESIGN §1 "fast path + slow twin"), behind ``backend="auto"|"torch"|"triton"``.

1. ``accept(parents, tokens, target=..., p_node=..., u=...)`` -> ``Acceptance``: walk a draft
   tree of N nodes from the root. ``parents[b, i]`` is -1 (a child of the root) or an earlier node
   (topological order, ``codedec.draft_tree``); siblings carry distinct tokens (a trie). Rows of
   the target are numbered as the verifier's logits: row 0 follows the root, row ``i + 1`` follows
   node i. Nodes are scanned once in index order, with ``cur`` the last accepted node (-1: the
   root):

   - greedy (``target`` [B, N + 1], the target's argmax per row): node i is accepted when it is a
     child of ``cur`` and ``tokens[i] == target[cur + 1]``;
   - sampled (``p_node`` [B, N]: each node's token's probability under its parent's row;
     ``u`` [B, N]: uniform draws): the children of ``cur`` are tried in index order, child i
     accepted when ``u[i] * residual < p_node[i]``, where ``residual`` is 1 minus the probability
     of the children of ``cur`` rejected before it (the multi-draft rule for deterministic
     drafts: draws without replacement, so the token that comes out is distributed exactly as
     the target's row). When every child of the last accepted node is rejected, the caller
     samples the bonus token from that node's row with its children's tokens removed.

   A node can only be accepted after its parent, and every child of an accepted node comes after
   it, so one pass finds the accepted path. ``Acceptance``: ``length`` [B] accepted nodes,
   ``path`` [B, N] their indices root first (-1 after ``length``), ``last`` [B] the last accepted
   node (-1: none; the bonus token comes from row ``last + 1``).

2. ``gather_positions(layer, index)`` -> [B, H, K, D]: positions ``index`` [K] of a cache layer
   [B, H, T, D] (any strides) — the accepted nodes' keys/values, which ``KVCache.keep`` writes
   back right after the context.

What it is not: the drafting (``codedec.speculate.suffix_tree``), the model forward over the tree
(``codedec.forward.tree_forward``) or the bonus token's sampling (torch, ``verify``).

Backends: ``auto`` = Triton for CUDA tensors, torch otherwise; ``triton`` on CPU tensors runs only
under ``TRITON_INTERPRET=1`` (fp32 there: the interpreter mishandles bf16).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import triton
import triton.language as tl
from triton import knobs

BACKENDS = ("auto", "torch", "triton")


class Acceptance(NamedTuple):
    """``length`` [B] int64 accepted nodes; ``path`` [B, N] int64 node indices (-1 padded);
    ``last`` [B] int64 the last accepted node (-1: the root's row gives the bonus token)."""

    length: torch.Tensor
    path: torch.Tensor
    last: torch.Tensor


def _check_accept(parents, tokens, target, p_node, u) -> tuple[int, int]:
    if parents.dim() != 2 or tokens.shape != parents.shape:
        raise ValueError(f"parents and tokens must both be [B, N], got {tuple(parents.shape)} and {tuple(tokens.shape)}")
    B, N = parents.shape
    if (target is None) == (p_node is None):
        raise ValueError("give either target (greedy) or p_node and u (sampled)")
    if target is not None and tuple(target.shape) != (B, N + 1):
        raise ValueError(f"target must be [B, N + 1] = [{B}, {N + 1}], got {tuple(target.shape)}")
    if p_node is not None and (u is None or tuple(p_node.shape) != (B, N) or tuple(u.shape) != (B, N)):
        raise ValueError(f"p_node and u must both be [B, N] = [{B}, {N}]")
    return B, N


def accept_torch(parents: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor | None = None,
                 p_node: torch.Tensor | None = None, u: torch.Tensor | None = None) -> Acceptance:
    """The pure-torch twin of ``accept_triton`` (module docstring, item 1): the same one pass,
    in Python over host copies (the sampled rule in float32, as the kernel computes it)."""
    B, N = _check_accept(parents, tokens, target, p_node, u)
    par, tok = parents.tolist(), tokens.tolist()
    tgt = target.tolist() if target is not None else None
    pn = p_node.float().cpu().numpy() if p_node is not None else None
    uu = u.float().cpu().numpy() if u is not None else None
    length = [0] * B
    path = [[-1] * N for _ in range(B)]
    last = [-1] * B
    for b in range(B):
        cur, residual = -1, np.float32(1.0)
        for i in range(N):
            if par[b][i] != cur:
                continue
            if tgt is not None:
                ok = tok[b][i] == tgt[b][cur + 1]
            else:
                ok = uu[b][i] * residual < pn[b][i]
                if not ok:
                    residual = np.float32(residual - pn[b][i])
            if ok:
                path[b][length[b]] = i
                length[b] += 1
                cur, residual = i, np.float32(1.0)
        last[b] = cur
    dev = parents.device
    return Acceptance(torch.tensor(length, dtype=torch.int64, device=dev),
                      torch.tensor(path, dtype=torch.int64, device=dev).reshape(B, N),
                      torch.tensor(last, dtype=torch.int64, device=dev))


def _accept_kernel(
    parents_ptr,  # int [B, N] contiguous
    tokens_ptr,  # int [B, N]
    target_ptr,  # int [B, N + 1] (greedy)
    p_ptr,  # fp32 [B, N] (sampled)
    u_ptr,  # fp32 [B, N] (sampled)
    length_ptr,  # int64 [B]
    path_ptr,  # int64 [B, N], -1 filled
    last_ptr,  # int64 [B]
    N,
    SAMPLED: tl.constexpr,
):
    """One program per tree: the one pass over its N nodes (loop-carried cur / residual)."""
    b = tl.program_id(0).to(tl.int64)
    cur = tl.full((), -1, tl.int64)
    count = tl.full((), 0, tl.int64)
    residual = tl.full((), 1.0, tl.float32)
    for i in range(N):
        par = tl.load(parents_ptr + b * N + i).to(tl.int64)
        child = par == cur
        if SAMPLED:
            p = tl.load(p_ptr + b * N + i)
            ok = child & (tl.load(u_ptr + b * N + i) * residual < p)
            residual = tl.where(child & ~ok, residual - p, residual)
        else:
            want = tl.load(target_ptr + b * (N + 1) + cur + 1).to(tl.int64)
            ok = child & (tl.load(tokens_ptr + b * N + i).to(tl.int64) == want)
        tl.store(path_ptr + b * N + count, i, mask=ok)
        count = tl.where(ok, count + 1, count)
        residual = tl.where(ok, 1.0, residual)
        cur = tl.where(ok, i, cur)
    tl.store(length_ptr + b, count)
    tl.store(last_ptr + b, cur)


def _gather_kernel(
    src_ptr,  # [B, H, T, D] any strides
    index_ptr,  # int64 [K]
    out_ptr,  # [B, H, K, D] contiguous
    H,
    K,
    D,
    stride_b,
    stride_h,
    stride_t,
    stride_d,
    BLOCK_D: tl.constexpr,
):
    """One program per (b, h, k): copy row ``index[k]`` of head (b, h), D elements in tiles."""
    pid = tl.program_id(0).to(tl.int64)
    k = pid % K
    bh = pid // K
    h = bh % H
    b = bh // H
    t = tl.load(index_ptr + k).to(tl.int64)
    src = src_ptr + b * stride_b + h * stride_h + t * stride_t
    dst = out_ptr + pid * D
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m = d < D
        tl.store(dst + d, tl.load(src + d * stride_d, mask=m), mask=m)


_JITTED: dict[tuple[str, bool], object] = {}  # (kernel, interpret mode) -> wrapped kernel


def _kernel(fn):
    key = (fn.__name__, bool(knobs.runtime.interpret))
    if key not in _JITTED:
        _JITTED[key] = triton.jit(fn)
    return _JITTED[key]


def _triton_ready(t: torch.Tensor) -> None:
    if t.device.type == "cpu" and not knobs.runtime.interpret:
        raise ValueError("the triton backend on CPU tensors needs TRITON_INTERPRET=1 (or use backend='torch')")


def accept_triton(parents: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor | None = None,
                  p_node: torch.Tensor | None = None, u: torch.Tensor | None = None) -> Acceptance:
    """Launcher of the acceptance kernel; same contract as ``accept_torch``. Grid: one program
    per tree."""
    B, N = _check_accept(parents, tokens, target, p_node, u)
    _triton_ready(parents)
    dev = parents.device
    length = torch.zeros(B, dtype=torch.int64, device=dev)
    path = torch.full((B, N), -1, dtype=torch.int64, device=dev)
    last = torch.full((B,), -1, dtype=torch.int64, device=dev)
    if B == 0 or N == 0:
        return Acceptance(length, path, last)
    sampled = p_node is not None
    dummy_f = torch.zeros(1, dtype=torch.float32, device=dev)
    dummy_i = torch.zeros(1, dtype=torch.int64, device=dev)
    _kernel(_accept_kernel)[(B,)](
        parents.contiguous(), tokens.contiguous(),
        target.contiguous() if not sampled else dummy_i,
        p_node.float().contiguous() if sampled else dummy_f,
        u.float().contiguous() if sampled else dummy_f,
        length, path, last, N, SAMPLED=sampled,
    )
    return Acceptance(length, path, last)


def accept(parents: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor | None = None,
           p_node: torch.Tensor | None = None, u: torch.Tensor | None = None, *,
           backend: str = "auto") -> Acceptance:
    """The accepted path of each draft tree (module docstring, item 1). Raises ``ValueError`` for
    bad shapes, a missing/extra mode argument or an unknown backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" or (backend == "auto" and parents.is_cuda):
        return accept_triton(parents, tokens, target, p_node, u)
    return accept_torch(parents, tokens, target, p_node, u)


def _check_gather(layer: torch.Tensor, index: torch.Tensor) -> None:
    if layer.dim() != 4:
        raise ValueError(f"layer must be [B, H, T, D], got {tuple(layer.shape)}")
    if index.dim() != 1 or index.is_floating_point():
        raise ValueError(f"index must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}")


def gather_positions_torch(layer: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The pure-torch twin: ``layer[:, :, index]`` as a new contiguous [B, H, K, D] tensor."""
    _check_gather(layer, index)
    return layer.index_select(2, index.to(layer.device)).contiguous()


def gather_positions_triton(layer: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Launcher of the gather kernel; same contract as ``gather_positions_torch``. Grid: one
    program per (batch row, head, kept position)."""
    _check_gather(layer, index)
    _triton_ready(layer)
    B, H, _T, D = layer.shape
    K = index.numel()
    out = torch.empty(B, H, K, D, dtype=layer.dtype, device=layer.device)
    if out.numel() == 0:
        return out
    _kernel(_gather_kernel)[(B * H * K,)](
        layer, index.to(device=layer.device, dtype=torch.int64).contiguous(), out, H, K, D, *layer.stride(),
        BLOCK_D=min(max(triton.next_power_of_2(D), 2), 256),
    )
    return out


def gather_positions(layer: torch.Tensor, index: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Positions ``index`` [K] of ``layer`` [B, H, T, D] -> [B, H, K, D] (module docstring, item 2)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" or (backend == "auto" and layer.is_cuda):
        return gather_positions_triton(layer, index)
    return gather_positions_torch(layer, index)
