"""Edit-aware KV reuse (PIE: He et al., "Let the Code LLM Edit Itself When You Edit the Code", ICLR 2025).

What it is: turn the cache of an old prompt into the cache of a new prompt that differs from it by
one edited region, without re-encoding the text after the edit:

1. ``find_edit(old, new)``: the common prefix, the edited region of each side, and the common
   suffix — aligned so that tokens generated after the old prompt (the previous completion, still
   at the end of the cache) are ignored;
2. ``apply_edit``: keep the prefix, encode the new region's tokens (a forward that attends to the
   prefix only: exact), move the cached suffix behind them and re-rotate its keys by the position
   change ``Δ`` in every layer (``codedec.kernels.rope_patch``; exact *positions*), then leave the
   cache holding ``new_ids[:-1]`` so that ``Engine.generate(new_ids, cache=cache)`` reuses all of it.

PIE's approximation: the suffix keys/values were computed while attending to the *old* region, so
their contents are stale (deeper layers), only their positions are corrected. Layer 0 is exact.

Fallbacks (the cache is cropped to the common prefix and the caller encodes the rest as usual):
RoPE kind not position-linear (``codedec.presets.rope_is_position_linear``), no rotary frequencies
found, cache layers that are not plain ``DynamicLayer`` (sliding windows, quantized), or an edit
larger than ``max_edit_fraction`` of the new prompt.

What it is not: a multi-edit diff (one contiguous edited region per call; several edits are applied
as one spanning region) nor a scheduler of when to apply it (the service decides).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from codedec.cache import KVCache, common_prefix_len
from codedec.forward import Interrupted, prefill
from codedec.kernels.rope_patch import rope_inv_freq
from codedec.presets import rope_is_position_linear

log = logging.getLogger(__name__)

MIN_ANCHOR = 8  # tokens of the new prompt's tail that must match the cache to count as a shared suffix


@dataclass(frozen=True)
class EditSpan:
    """One edit between cached ids ``old`` and new ids ``new`` (half-open index ranges).

    ``old[:start] == new[:start]``; ``old[old_end:old_len] == new[new_end:]``; the edit replaced
    ``old[start:old_end]`` by ``new[start:new_end]``. ``old[old_len:]`` is a stale tail (tokens of
    the previous completion) that the new prompt does not contain.
    """

    start: int
    old_end: int
    new_end: int
    old_len: int

    @property
    def delta(self) -> int:
        """Position change of every suffix token (``new position - old position``)."""
        return self.new_end - self.old_end

    @property
    def suffix(self) -> int:
        """Tokens shared after the edit."""
        return self.old_len - self.old_end

    @property
    def size(self) -> int:
        """Edit size in tokens: the larger of the removed and the inserted region."""
        return max(self.old_end - self.start, self.new_end - self.start)


@dataclass(frozen=True)
class EditResult:
    """What ``apply_edit`` did. ``kept_prefix``: positions kept untouched; ``encoded``: tokens it
    ran through the model; ``rotated``: suffix tokens moved (re-rotated unless ``rerotate=False``)
    by ``delta``; ``fallback_reason``: ``None`` when the cache was patched (or there was nothing to
    patch), else why PIE declined — the cache then holds only the common prefix."""

    kept_prefix: int
    encoded: int
    rotated: int
    delta: int
    fallback_reason: str | None
    span: EditSpan | None = None


def _common_suffix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common suffix of two equal-length-bounded int arrays."""
    m = min(len(a), len(b))
    if m == 0:
        return 0
    diff = a[len(a) - m :][::-1] != b[len(b) - m :][::-1]
    return int(np.argmax(diff)) if diff.any() else m


def find_edit(old: Sequence[int], new: Sequence[int], *, min_anchor: int = MIN_ANCHOR) -> EditSpan | None:
    """The edit that turns ``old`` (cached ids, possibly followed by a stale tail) into ``new``.

    1. ``start`` = common prefix length.
    2. The shared suffix must end where ``new`` ends; in ``old`` it may end before the stale tail.
       Candidates are the places where ``new``'s last ``min_anchor`` ids occur in ``old[start:]``;
       each is extended backwards (never into the prefix of either side); the longest wins, the
       later on ties.
    3. ``None`` when no candidate exists (no shared suffix worth moving: plain prefix reuse).
    """
    start = common_prefix_len(old, new)
    k = min(min_anchor, len(new) - start)
    if k <= 0 or len(old) - start < k:
        return None
    a = np.asarray(old, dtype=np.int64)
    b = np.asarray(new, dtype=np.int64)
    anchor = b[len(b) - k :]
    windows = np.lib.stride_tricks.sliding_window_view(a[start:], k)  # [len(old)-start-k+1, k]
    ends = np.nonzero((windows == anchor).all(axis=1))[0] + start + k  # old_len candidates
    best: tuple[int, int] | None = None  # (suffix, old_len)
    for end in ends.tolist():
        s = min(_common_suffix(a[start:end], b[start:]), end - start, len(b) - start)
        if best is None or (s, end) >= best:
            best = (s, end)
    if best is None:
        return None
    s, end = best
    return EditSpan(start=start, old_end=end - s, new_end=len(b) - s, old_len=end)


@dataclass(frozen=True)
class RotarySpec:
    """How the model rotates keys: per-pair frequencies ``inv_freq`` [rotary_dim // 2] and layout."""

    inv_freq: torch.Tensor
    layout: str


def rotary_spec(model: Any, preset: dict) -> RotarySpec | None:
    """The model's RoPE frequencies and layout, or ``None`` when they cannot be known.

    1. A module buffer ``inv_freq`` (HF ``*RotaryEmbedding``: already rescaled for linear/llama3
       kinds, and rounded as the model uses it); several different ones (per-layer-type RoPE) -> None.
    2. Else from the preset's ``theta``/``factor`` and the config's ``rotary_dim`` (GPT-J) or
       ``head_dim · partial_rotary_factor`` — ``default`` and ``linear`` kinds only.
    """
    rope = preset.get("rope") or {}
    layout = rope.get("layout", "rotate_half")
    found: list[torch.Tensor] = []
    for module in model.modules():
        inv = getattr(module, "inv_freq", None)
        if isinstance(inv, torch.Tensor) and not any(inv is f or torch.equal(inv, f) for f in found):
            found.append(inv)
    if len(found) > 1:
        return None
    if found:
        return RotarySpec(found[0].detach().float(), layout)
    kind = rope.get("kind", "default")
    if kind not in ("default", "linear"):
        return None
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary_dim = getattr(config, "rotary_dim", None) or int(head_dim * rope.get("partial_rotary_factor", 1.0))
    factor = float(rope.get("factor", 1.0)) if kind == "linear" else 1.0
    return RotarySpec(rope_inv_freq(float(rope.get("theta", 10000.0)), rotary_dim, factor), layout)


def shift_positions(
    cache: KVCache, start: int, end: int, delta: int | torch.Tensor, spec: RotarySpec, *, backend: str = "auto"
) -> None:
    """Re-rotate the keys at cache positions ``[start, end)`` of every layer by ``delta`` (int or
    integer tensor [end - start]) so that they encode positions ``p + delta``; values are unchanged."""
    with torch.inference_mode():
        cache.rerotate(start, end, delta, spec.inv_freq, spec.layout, backend=backend)


def _decline(cache: KVCache, new_ids: Sequence[int], reason: str | None, span: EditSpan | None) -> EditResult:
    keep = min(common_prefix_len(cache.tokens, new_ids), max(len(new_ids) - 1, 0))
    cache.crop(keep)
    if reason is not None:
        log.debug("pie: fallback (%s), keeping %d of %d tokens", reason, keep, len(new_ids))
    return EditResult(keep, 0, 0, 0, reason, span)


@torch.inference_mode()
def apply_edit(
    model: Any,
    cache: KVCache,
    new_ids: Sequence[int],
    preset: dict,
    *,
    max_edit_fraction: float = 0.3,
    backend: str = "auto",
    rerotate: bool = True,
    min_anchor: int = MIN_ANCHOR,
    should_stop: Callable[[], str | None] | None = None,
) -> EditResult:
    """Patch ``cache`` (holding old ids, maybe followed by a previous completion) for ``new_ids``.

    Afterwards the cache holds a prefix of ``new_ids[:-1]``: all of it when patched, only the common
    prefix on a fallback. Algorithm (``span = find_edit(cache.tokens, new_ids)``):

    1. no shared suffix, or nothing after the prefix -> plain prefix reuse (``fallback_reason=None``);
    2. RoPE not position-linear / unknown frequencies / non-plain cache layers / ``span.size >
       max_edit_fraction · len(new_ids)`` -> fallback with that reason;
    3. take views of the cached suffix ``old[old_end : old_end + n]`` (``n = suffix - 1``: the last
       new id is left for the caller's forward, which produces the next-token logits);
    4. crop to ``start``; encode ``new[start:new_end]`` (exact: it attends to the prefix only);
    5. append the suffix keys/values to every layer and rotate the appended keys by
       ``Δ = new_end - old_end`` (skipped when ``Δ = 0`` or ``rerotate=False``: the naive-shift
       baseline of the benchmark, which keeps stale positions).

    ``should_stop`` is asked between the edited span's prefill chunks (``forward.prefill``); an
    ``Interrupted`` edit leaves the cache holding the common prefix and the chunks already encoded
    (a prefix of ``new_ids``: the next request reuses it) and re-raises; a forward that fails
    half-way resets the cache and re-raises.
    """
    if not 0.0 <= max_edit_fraction <= 1.0:
        raise ValueError(f"max_edit_fraction must be in [0, 1], got {max_edit_fraction}")
    new_ids = [int(i) for i in new_ids]
    if len(new_ids) == 0:
        raise ValueError("new_ids is empty: at least one token id is needed")
    span = find_edit(cache.tokens, new_ids, min_anchor=min_anchor)
    if span is None or span.suffix < 2 or span.start >= len(new_ids) - 1:
        return _decline(cache, new_ids, None, span)
    if not rope_is_position_linear(preset):
        return _decline(cache, new_ids, f"rope kind {(preset.get('rope') or {}).get('kind')!r} is not position-linear", span)
    spec = rotary_spec(model, preset)
    if spec is None:
        return _decline(cache, new_ids, "rotary frequencies unknown", span)
    if not cache.plain_layers():
        return _decline(cache, new_ids, "cache layers are not plain DynamicLayer", span)
    if span.size > max_edit_fraction * len(new_ids):
        return _decline(cache, new_ids, f"edit of {span.size} tokens > {max_edit_fraction:.0%} of {len(new_ids)}", span)

    n = span.suffix - 1
    moved = cache.segment(span.old_end, span.old_end + n)  # views of the old storage, kept by crop
    encoded = span.new_end - span.start
    try:
        cache.crop(span.start)
        if encoded:
            prefill(model, cache, new_ids[span.start : span.new_end], should_stop=should_stop)
        cache.extend(moved)
        if rerotate and span.delta:
            shift_positions(cache, span.new_end, span.new_end + n, span.delta, spec, backend=backend)
    except Interrupted:
        raise  # between chunks: the cache holds the prefix and the chunks encoded, a prefix of new_ids
    except BaseException:
        cache.reset()
        raise
    return EditResult(span.start, encoded, n, span.delta, None, span)
