"""The decode phases as small functions — the only callers of ``model.forward`` (DESIGN §1).

Each function appends the given ids to the ``KVCache`` at positions ``len(cache) ..`` and returns
next-token logits in float32:

- ``prefill(model, cache, ids)``      -> [V]     logits after the last id; long prompts in chunks,
  with an optional ``should_stop`` check between chunks (a long prompt is cancellable)
- ``decode_one(model, cache, token)`` -> [V]     one step of plain decoding
- ``verify_forward(model, cache, ids)`` -> [P, V] logits after each of P >= 1 ids (row i predicts
  the token that follows ``ids[i]``): a chain draft is scored with it
- ``tree_forward(model, cache, ids, parents)`` -> [P, V] one forward over a tree of P draft nodes:
  row i predicts the token after node i's path (speculation verifies a whole tree at once; the
  caller then keeps the accepted path with ``KVCache.keep``); ``tree_rows_sequential`` is its
  slow reference (one ``decode_one`` per node), for tests and the exactness benchmark

``use_fastpath(model, on)``: whether a model's forwards take ``codedec.fastpath``'s lean forward
(the default where it supports the model) or transformers' (benchmarks compare the two).

Row i of ``verify_forward`` equals what ``decode_one`` would return after feeding ``ids[:i+1]``
one at a time (up to floating-point reassociation). Nothing here samples or knows about text.
Every forward adds one to ``cache.forwards`` (the ``forwards`` figure of a completion).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence

import torch

from codedec import draft_tree, fastpath
from codedec.cache import KVCache

PREFILL_CHUNK = 512  # tokens per forward when encoding a long prompt: bounds activation memory
MIN_CHUNK = 64  # the smallest chunk when chunks shrink to end near a deadline
_SPEED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> prefill ms per token (EWMA)
_LEAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> fastpath.supports(model)


def _chunk_before(model, deadline: float | None, chunk: int) -> int:
    """``chunk``, or fewer tokens when the learned speed says ``chunk`` would end past ``deadline``
    (a ``perf_counter`` time): a spent time budget is then noticed within a small chunk, not a
    512-token one (2.8 s on a loaded 2-core machine). Never below ``MIN_CHUNK``."""
    ms = _SPEED.get(model)
    if deadline is None or ms is None:
        return chunk
    left_ms = (deadline - time.perf_counter()) * 1000.0
    fit = int(left_ms / max(ms, 1e-6))
    return max(min(MIN_CHUNK, chunk), min(chunk, fit))


def _learn_speed(model, tokens: int, ms: float) -> None:
    if tokens >= MIN_CHUNK:
        old = _SPEED.get(model)
        now = ms / tokens
        _SPEED[model] = now if old is None else 0.5 * old + 0.5 * now


class Interrupted(Exception):
    """A prefill stopped between chunks; ``reason`` is what ``should_stop`` returned
    (``"cancelled"``, ``"time"``). The chunks before it stay in the cache (a later request reuses
    them)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def use_fastpath(model, on: bool | None) -> None:
    """Whether ``model``'s forwards go through ``codedec.fastpath``'s lean forward (True, where it
    supports the model), through transformers' (False) — benchmarks compare the two on one model —
    or as ``fastpath.supports`` decides (None, the default)."""
    if on is None:
        _LEAN.pop(model, None)
    else:
        _LEAN[model] = bool(on) and fastpath.supports(model)


def _forward(model, cache: KVCache, ids: Sequence[int], keep: int, positions: torch.Tensor | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Encode ``ids`` after the cache; return logits for the last ``keep`` positions [keep, V].

    ``positions`` [P] default to ``len(cache) + arange(P)``; ``mask`` is a 4-D additive attention
    mask [1, 1, P, len(cache) + P] (default: causal)."""
    if len(ids) == 0:
        raise ValueError("forward needs at least one token id")
    device = model.device
    start = len(cache)
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)  # [1, P]
    if positions is None:
        positions = torch.arange(start, start + len(ids), device=device)
    lean = _LEAN.get(model)
    if lean is None:
        lean = _LEAN[model] = fastpath.supports(model)
    if lean and "forward" not in vars(model):  # the same arithmetic without transformers' plumbing
        # (codedec.fastpath); a forward replaced on the instance (wrapped, instrumented) is honoured
        logits = fastpath.lean_forward(model, cache.kv, input_ids, positions.unsqueeze(0), mask, keep)
    else:
        kwargs = {} if mask is None else {"attention_mask": mask}
        logits = model(
            input_ids=input_ids,
            position_ids=positions.unsqueeze(0),  # [1, P]
            past_key_values=cache.kv,
            use_cache=True,
            logits_to_keep=keep,
            **kwargs,
        ).logits
    cache.forwards += 1
    cache.appended(ids)
    return logits[0].float()  # [keep, V]


@torch.inference_mode()
def prefill(
    model,
    cache: KVCache,
    ids: Sequence[int],
    chunk: int | None = None,
    should_stop: Callable[[], str | None] | None = None,
    deadline: float | None = None,
) -> torch.Tensor:
    """Encode a prompt (or the part of it not already cached); return the next-token logits [V].

    ``should_stop()`` is asked between chunks; a non-None answer raises ``Interrupted`` with it
    (the cache then holds the chunks encoded so far, a consistent prefix). ``deadline`` (a
    ``perf_counter`` time, the request's time budget): chunks shrink so the last one before it
    ends close to it (the prefill speed is learned per model as chunks run)."""
    if len(ids) == 0:
        raise ValueError("prefill needs at least one token id")
    chunk = PREFILL_CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    logits = None
    start = 0
    while start < len(ids):
        if start and should_stop is not None:
            reason = should_stop()
            if reason is not None:
                raise Interrupted(reason)
        part = ids[start : start + _chunk_before(model, deadline, chunk)]
        t0 = time.perf_counter()
        logits = _forward(model, cache, part, keep=1)
        _learn_speed(model, len(part), (time.perf_counter() - t0) * 1000.0)
        start += len(part)
    return logits[-1]


@torch.inference_mode()
def decode_one(model, cache: KVCache, token: int) -> torch.Tensor:
    """Feed one token; return the logits for the one after it [V]."""
    return _forward(model, cache, (token,), keep=1)[-1]


@torch.inference_mode()
def verify_forward(model, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
    """Feed P >= 1 tokens in one forward; return logits after each of them [P, V]."""
    return _forward(model, cache, ids, keep=len(ids))


def tree_rows_sequential(model, context: KVCache, ids: Sequence[int], parents: Sequence[int]) -> list[torch.Tensor]:
    """The slow reference for ``tree_forward`` (tests and ``benchmarks/bench_tree_forward.py``):
    the logits [V] after each node's path, one ``decode_one`` per node on a fork of its parent's
    cache (``context`` is left as it is)."""
    caches: list[KVCache] = []
    rows = []
    for tok, par in zip(ids, parents, strict=True):
        cache = (context if par < 0 else caches[par]).fork()
        rows.append(decode_one(model, cache, tok))
        caches.append(cache)
    return rows


@torch.inference_mode()
def tree_forward(model, cache: KVCache, ids: Sequence[int], parents: Sequence[int],
                 context: int | None = None) -> torch.Tensor:
    """One forward over P draft nodes after the cached context; return logits [P, V].

    ``context`` (default: all of the cache): how many cached positions are context. Positions
    after it hold earlier nodes of the same tree (a tree grown one level per forward, as
    lookahead rollouts do): ``parents`` then describes those cached nodes first, in cache order,
    then the P new ones; the new nodes see the context and their ancestors among all nodes.

    1. depth(i) from ``parents`` (``draft_tree.depths``), position of node i = ``len(cache) +
       depth(i)``;
    2. mask [1, 1, P, T + P]: every node sees the whole context (T cached positions) and, among
       the nodes, only itself and its ancestors (``draft_tree.ancestors``);
    3. one forward; all P nodes are appended to the cache in node order — ``KVCache.keep`` then
       compacts it to the accepted path, whose keys already sit at their final positions (a path
       has depths 0, 1, 2, ..., exactly the positions it takes once compacted).

    Row i equals the logits of a sequential decode along node i's path (up to floating-point
    reassociation; tested to fp32 tolerance).
    """
    start = len(cache)
    context = start if context is None else context
    old = start - context  # nodes of the tree already in the cache
    if not 0 <= old <= start or len(ids) + old != len(parents):
        raise ValueError(f"{len(ids)} new ids and {old} cached nodes but {len(parents)} parents")
    depths = draft_tree.depths(parents)[old:]
    device = model.device
    dtype = getattr(model, "dtype", torch.float32)
    if not dtype.is_floating_point:
        dtype = torch.float32
    visible = torch.ones(len(ids), start + len(ids), dtype=torch.bool)  # [P, T + old + P]
    visible[:, context:] = draft_tree.ancestors(parents)[old:]
    mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
    positions = context + torch.tensor(depths, dtype=torch.long, device=device)  # [P]
    return _forward(model, cache, ids, keep=len(ids), positions=positions, mask=mask[None, None].to(device))


@torch.inference_mode()
def token_nll(model, rows: Sequence[Sequence[int]], batch_tokens: int = 512) -> list[torch.Tensor]:
    """Negative log-likelihood (nats) of every token of each row given the tokens before it, no
    cache: ``out[i][j]`` = -log p(rows[i][j + 1] | rows[i][:j + 1]), a float32 tensor [len(row) - 1]
    (LongCodeZip's perplexities, ``codedec.context.longcodezip``).

    Rows are sorted by length and run in right-padded batches of at most ``batch_tokens`` padded
    tokens (a causal model never looks at the padding after a row's end, so it needs no mask);
    ``batch_tokens`` bounds the logits held at once (512 x a 49k vocabulary = 100 MB in fp32).
    """
    if any(len(r) < 2 for r in rows):
        raise ValueError("every row needs at least two tokens")
    out: list[torch.Tensor | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    device = model.device
    at = 0
    while at < len(order):
        width = len(rows[order[at]])
        n = max(1, min(len(order) - at, batch_tokens // width))
        batch = order[at: at + n]
        ids = torch.zeros(n, width, dtype=torch.long)  # [n, width], right-padded with 0
        for b, i in enumerate(batch):
            ids[b, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        logits = model(input_ids=ids.to(device), use_cache=False).logits[:, :-1].float()  # [n, width - 1, V]
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten().to(device),
                                                reduction="none").view(n, width - 1).cpu()  # [n, width - 1]
        for b, i in enumerate(batch):
            out[i] = nll[b, : len(rows[i]) - 1]
        at += n
    return out  # type: ignore[return-value]
