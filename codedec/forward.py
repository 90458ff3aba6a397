"""The decode phases as small functions — the only callers of ``model.forward`` (DESIGN §1).

Each function appends the given ids to the ``KVCache`` at positions ``len(cache) ..`` and returns
next-token logits in float32:

- ``prefill(model, cache, ids)``      -> [V]     logits after the last id; long prompts in chunks
- ``decode_one(model, cache, token)`` -> [V]     one step of plain decoding
- ``verify_forward(model, cache, ids)`` -> [P, V] logits after each of P >= 1 ids (row i predicts
  the token that follows ``ids[i]``): speculation and lookahead score drafts with it.

Row i of ``verify_forward`` equals what ``decode_one`` would return after feeding ``ids[:i+1]``
one at a time (up to floating-point reassociation). Nothing here samples or knows about text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from codedec.cache import KVCache

PREFILL_CHUNK = 512  # tokens per forward when encoding a long prompt: bounds activation memory


def _forward(model, cache: KVCache, ids: Sequence[int], keep: int) -> torch.Tensor:
    """Encode ``ids`` after the cache; return logits for the last ``keep`` positions [keep, V]."""
    if len(ids) == 0:
        raise ValueError("forward needs at least one token id")
    device = model.device
    start = len(cache)
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)  # [1, P]
    position_ids = torch.arange(start, start + len(ids), device=device).unsqueeze(0)  # [1, P]
    out = model(
        input_ids=input_ids,
        position_ids=position_ids,
        past_key_values=cache.kv,
        use_cache=True,
        logits_to_keep=keep,
    )
    cache.appended(ids)
    return out.logits[0].float()  # [keep, V]


@torch.inference_mode()
def prefill(model, cache: KVCache, ids: Sequence[int], chunk: int = PREFILL_CHUNK) -> torch.Tensor:
    """Encode a prompt (or the part of it not already cached); return the next-token logits [V]."""
    if len(ids) == 0:
        raise ValueError("prefill needs at least one token id")
    logits = None
    for start in range(0, len(ids), chunk):
        logits = _forward(model, cache, ids[start : start + chunk], keep=1)
    return logits[-1]


@torch.inference_mode()
def decode_one(model, cache: KVCache, token: int) -> torch.Tensor:
    """Feed one token; return the logits for the one after it [V]."""
    return _forward(model, cache, (token,), keep=1)[-1]


@torch.inference_mode()
def verify_forward(model, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
    """Feed P >= 1 tokens in one forward; return logits after each of them [P, V]."""
    return _forward(model, cache, ids, keep=len(ids))
