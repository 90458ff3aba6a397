"""The KV cache of one sequence and the token ids it holds.

What it is: a thin owner of a transformers ``DynamicCache`` (layers ``.keys/.values`` of shape
[B=1, H_kv, T, D]) that also remembers which token ids produced those T positions, so that

1. a new request reuses the longest common prefix with what is cached (``reuse``), prefilling only
   the rest (llama.cpp's ``cache_prompt``, vLLM's prefix caching for a single sequence);
2. speculation and lookahead can undo tokens (``rollback(n)``/``crop(t)``) and branch (``fork``).

Invariant: ``len(self) == len(self.tokens) == kv.get_seq_length()``; position ``t`` of every layer
holds the key/value of ``tokens[t]`` at position ``t``.

What it is not: a paged multi-sequence allocator. Edit-aware reuse (PIE: keep the cache after a
mid-file edit and re-rotate the suffix keys, ``codedec.kernels.rope_patch``) lives in
``codedec.pie``; ``apply_edit`` here delegates to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from codedec.pie import EditResult


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    # Compare in chunks first: prompts are long and usually share most of their ids.
    while i + 64 <= n and list(a[i : i + 64]) == list(b[i : i + 64]):
        i += 64
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KVCache:
    """KV cache + the ids it encodes, with prefix reuse, rollback and fork."""

    def __init__(self, config=None) -> None:
        self._config = config
        self.kv = DynamicCache(config=config)
        self.tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        """Drop everything."""
        self.kv = DynamicCache(config=self._config)
        self.tokens = []

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions."""
        if not 0 <= length <= len(self.tokens):
            raise ValueError(f"crop({length}) on a cache of {len(self.tokens)} tokens")
        if length == len(self.tokens):
            return
        if length == 0:
            self.reset()
            return
        self.kv.crop(length - len(self.tokens))  # transformers 5: a negative count removes tokens
        del self.tokens[length:]

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` positions (a rejected draft, a finished lookahead)."""
        if not 0 <= n <= len(self.tokens):
            raise ValueError(f"rollback({n}) on a cache of {len(self.tokens)} tokens")
        self.crop(len(self.tokens) - n)

    def reuse(self, prompt_ids: Sequence[int]) -> int:
        """Crop to the longest common prefix with ``prompt_ids`` and return how many positions were
        kept. At least one prompt id is always left to encode, because the next-token logits come
        from a forward over it."""
        keep = min(common_prefix_len(self.tokens, prompt_ids), max(len(prompt_ids) - 1, 0))
        self.crop(keep)
        return keep

    def appended(self, ids: Sequence[int]) -> None:
        """Record that a forward just wrote ``ids`` at the end of every layer."""
        self.tokens.extend(int(i) for i in ids)
        if self.kv.get_seq_length() != len(self.tokens):
            raise RuntimeError(
                f"KV cache holds {self.kv.get_seq_length()} positions but {len(self.tokens)} ids"
            )

    def fork(self) -> KVCache:
        """An independent copy (tensors cloned): writing to either leaves the other unchanged."""
        other = KVCache(self._config)
        for idx, layer in enumerate(self.kv.layers):
            if layer.is_initialized:
                other.kv.update(layer.keys.clone(), layer.values.clone(), idx)
        other.tokens = list(self.tokens)
        return other

    def layer_tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) per layer, each [1, H_kv, T, D] — views, not copies."""
        return [(layer.keys, layer.values) for layer in self.kv.layers]

    def apply_edit(self, model: Any, new_ids: Sequence[int], preset: dict, **options: Any) -> EditResult:
        """PIE edit-aware reuse for ``new_ids`` (``codedec.pie.apply_edit``): afterwards the cache
        holds a prefix of ``new_ids[:-1]`` (all of it unless PIE fell back to the common prefix)."""
        from codedec.pie import apply_edit  # pie imports this module

        return apply_edit(model, self, new_ids, preset, **options)
