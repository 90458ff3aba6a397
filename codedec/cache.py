"""The KV cache of one sequence and the token ids it holds.

What it is: a thin owner of a transformers ``DynamicCache`` (layers ``.keys/.values`` of shape
[B=1, H_kv, T, D]) that also remembers which token ids produced those T positions, so that

1. a new request reuses the longest common prefix with what is cached (``reuse``), prefilling only
   the rest (llama.cpp's ``cache_prompt``, vLLM's prefix caching for a single sequence);
2. speculation and lookahead can undo tokens (``rollback(n)``/``crop(t)``), branch (``fork``) and
   keep only an accepted path of a verified draft tree (``keep``, or ``keep_path`` when the
   context stays whole);
3. edit-aware reuse (PIE, ``codedec.pie``) can cut a range out (``segment``), put it back after
   newly encoded tokens (``extend``) and re-rotate its keys to new positions (``rerotate``).

This is the only code that touches layer tensors; ``forward`` hands ``kv`` to the model, PIE asks
for ranges by position.

Storage: each plain layer is a :class:`GrowingLayer` — keys/values live in a buffer with spare
capacity (grown by a quarter when full) and the layer's ``keys``/``values`` are views of its first T
positions, so a decode step writes one position in place instead of concatenating the whole
cache (transformers' ``DynamicLayer``: a copy of every layer per token, ~12 ms per token at 1,800
cached tokens on SmolLM2 here). Views into the buffer are overwritten by later writes after a
``crop``: ``segment`` therefore copies.

Invariant: ``len(self) == len(self.tokens) == kv.get_seq_length()``; position ``t`` of every layer
holds the key/value of ``tokens[t]`` at position ``t``. ``forwards`` counts model forwards that
wrote into this cache (never reset: callers take differences).

What it is not: a paged multi-sequence allocator, nor the policy of when to apply an edit
(``codedec.pie``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from codedec.kernels.rope_patch import rope_patch


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


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` [B, H_kv, T, D] are views of the first T
    positions of buffers with room for more: ``update`` writes the new positions in place
    (amortized O(new): a full buffer is reallocated with 25 % headroom); ``crop`` (inherited)
    narrows the views."""

    MIN_CAPACITY = 256

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf = self._vbuf = None

    @torch.inference_mode()
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = self.get_seq_length()
        n = key_states.shape[-2]
        if self._kbuf is None or t + n > self._kbuf.shape[-2] or not self._owns_views():
            cap = t + n + max(self.MIN_CAPACITY, (t + n) // 4)  # 25 % headroom: amortized O(1), little waste
            kbuf = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
            vbuf = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
            if t:
                kbuf[..., :t, :] = self.keys
                vbuf[..., :t, :] = self.values
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[..., t:t + n, :] = key_states
        self._vbuf[..., t:t + n, :] = value_states
        self.keys = self._kbuf[..., :t + n, :]
        self.values = self._vbuf[..., :t + n, :]
        return self.keys, self.values

    def _owns_views(self) -> bool:
        """True when ``keys``/``values`` are still prefix views of this layer's buffers (not
        replaced by someone else's tensors)."""
        t = self.get_seq_length()
        return t == 0 or (self.keys.data_ptr() == self._kbuf.data_ptr()
                          and self.values.data_ptr() == self._vbuf.data_ptr())

    def reset(self) -> None:
        super().reset()
        self._kbuf = self._vbuf = None


def _new_kv(config) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose plain layers grow in place (``GrowingLayer``)."""
    kv = DynamicCache(config=config)
    if kv.layers and all(type(layer) is DynamicLayer for layer in kv.layers):
        kv.layers = [GrowingLayer() for _ in kv.layers]
    elif not kv.layers and getattr(kv, "layer_class_to_replicate", None) is DynamicLayer:  # no config: lazy layers
        kv.layer_class_to_replicate = GrowingLayer
    return kv


@dataclass(frozen=True)
class Segment:
    """Cached positions cut out of a cache: per layer (keys, values) [1, H_kv, n, D] (copies,
    unaffected by later writes to the cache) and the ``tokens`` they encode."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # copies: the cache writes in place
    tokens: tuple[int, ...]


class KVCache:
    """KV cache + the ids it encodes, with prefix reuse, rollback, fork, keep and PIE's ranges."""

    def __init__(self, config=None) -> None:
        self._config = config
        self.kv = _new_kv(config)
        self.tokens: list[int] = []
        self.forwards = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        """Drop everything."""
        self.kv = _new_kv(self._config)
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
        other.forwards = self.forwards
        return other

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only ``positions`` (strictly increasing), compacted to ``0 .. len(positions)-1``.

        After a tree verification the cache holds the context and every draft node; keeping the
        context plus the accepted path's nodes leaves exactly the cache a sequential decode of
        that path would have written (``forward.tree_forward`` put each node's key at the position
        it takes here). Positions up to the first gap are left in place; the rest are gathered
        (``keep_path`` from there).
        """
        pos = [int(p) for p in positions]
        if any(b <= a for a, b in zip(pos, pos[1:], strict=False)) or (pos and not 0 <= pos[0] <= pos[-1] < len(self)):
            raise ValueError(f"keep({pos[:8]}...) needs increasing positions < {len(self)}")
        same = 0
        while same < len(pos) and pos[same] == same:
            same += 1
        self.keep_path(same, pos[same:])

    @torch.inference_mode()
    def keep_path(self, start: int, positions: Sequence[int], *, backend: str = "auto") -> None:
        """Keep positions ``[0, start)`` and then ``positions`` (strictly increasing, each >=
        ``start``), the latter moved to ``start, start + 1, ...`` — ``keep`` for a verified draft,
        in O(kept nodes) instead of O(cache): the accepted nodes' keys/values are gathered
        (``codedec.kernels.tree_verify.gather_positions``) and written in place right after the
        context, then the rest is cropped.
        """
        from codedec.kernels.tree_verify import gather_positions

        pos = [int(p) for p in positions]
        if not 0 <= start <= len(self) or any(b <= a for a, b in zip(pos, pos[1:], strict=False)) \
                or (pos and not start <= pos[0] <= pos[-1] < len(self)):
            raise ValueError(f"keep_path({start}, {pos[:8]}...) needs increasing positions in [{start}, {len(self)})")
        same = 0
        while same < len(pos) and pos[same] == start + same:
            same += 1
        if same < len(pos):
            index = torch.tensor(pos[same:], dtype=torch.long)
            lo, hi = start + same, start + len(pos)
            for layer in self.kv.layers:
                idx = index.to(layer.keys.device)
                layer.keys[:, :, lo:hi] = gather_positions(layer.keys, idx, backend=backend)
                layer.values[:, :, lo:hi] = gather_positions(layer.values, idx, backend=backend)
            self.tokens[lo:hi] = [self.tokens[p] for p in pos[same:]]
        self.crop(start + len(pos))

    def segment(self, start: int, end: int) -> Segment:
        """Copies of positions ``[start, end)`` of every layer (valid after ``crop`` and later
        writes)."""
        if not 0 <= start <= end <= len(self):
            raise ValueError(f"segment({start}, {end}) of a cache of {len(self)} tokens")
        layers = tuple(
            (layer.keys[:, :, start:end, :].clone(), layer.values[:, :, start:end, :].clone())
            for layer in self.kv.layers
        )
        return Segment(layers, tuple(self.tokens[start:end]))

    @torch.inference_mode()
    def extend(self, segment: Segment) -> None:
        """Append a segment's keys/values (as they are: positions are fixed with ``rerotate``)."""
        if not segment.tokens:
            return
        for idx, (k, v) in enumerate(segment.layers):
            self.kv.update(k, v, idx)  # copied into the cache's buffers
        self.appended(segment.tokens)

    def rerotate(self, start: int, end: int, delta: int | torch.Tensor, inv_freq: torch.Tensor, layout: str,
                 *, backend: str = "auto") -> None:
        """Re-rotate the keys at positions ``[start, end)`` of every layer by ``delta`` (int or
        integer tensor [end - start]) so that they encode positions ``p + delta``; values are
        unchanged (``codedec.kernels.rope_patch``)."""
        if not 0 <= start <= end <= len(self):
            raise ValueError(f"rerotate({start}, {end}) on a cache of {len(self)} tokens")
        if end == start:
            return
        for layer in self.kv.layers:
            rope_patch(layer.keys[:, :, start:end, :], delta, inv_freq.to(layer.keys.device), layout, backend=backend)

    def plain_layers(self) -> bool:
        """True when every layer is a plain ``DynamicLayer`` or our ``GrowingLayer`` (no sliding
        window, no quantization)."""
        return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in self.kv.layers)

    def layer_tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) per layer, each [1, H_kv, T, D] — views, not copies."""
        return [(layer.keys, layer.values) for layer in self.kv.layers]
