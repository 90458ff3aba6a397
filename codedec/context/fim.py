"""Prompt assembly for a cursor: prefix/suffix -> token ids, per model family, within a budget.

``build_prompt(preset, tokenizer, prefix, suffix, max_tokens=..., heal=True)`` returns a ``Prompt``:

1. Budget: the suffix gets at most ``suffix_share`` of ``max_tokens`` (and only what it needs),
   the prefix the rest. Whole lines are dropped from the far end of each side — the start of the
   prefix, the end of the suffix — so the lines nearest the cursor are always kept. The prefix
   drops lines in blocks of ``PREFIX_LINE_ALIGN`` so its start is stable while the user types
   (KV-cache prefix reuse across requests).
2. Token healing (on by default): the prefix's trailing token(s) are removed and returned as
   ``heal_text`` (see ``codedec.context.healing``).
3. Layout from the preset's ``fim`` entry: PSM ``<pre>prefix<suf>suffix<mid>`` or SPM
   ``<suf>suffix<pre>prefix<mid>`` (the cursor boundary stays at the end of the prompt in both);
   models without FIM tokens get the prefix only (the suffix stays on the ``Prompt`` for decoding
   components that use it, e.g. grammar constraints).

What it is not: context retrieval or compression (LongCodeZip lives in ``context/longcodezip.py``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from codedec.context.healing import heal_tail
from codedec.vocab import vocab_for

DEFAULT_SUFFIX_SHARE = 0.25
PREFIX_LINE_ALIGN = 32  # the prefix window's start moves in steps of this many lines
FITS_CHARS_PER_TOKEN = 4  # text longer than this many chars per budget token is not tried whole
LINE_COST_MEMO = 65536  # remembered per-line token counts per tokenizer (cleared when full)


@dataclass(frozen=True)
class Prompt:
    """Token ids for one completion request and what they were built from."""

    ids: list[int]
    heal_text: str  # text removed from the end of the prefix; the completion must start with it
    prefix: str  # the prefix text actually used (after the budget)
    suffix: str  # the suffix text actually used ("" parts dropped by the budget)
    mode: str  # "psm", "spm" or "prefix"
    dropped_prefix_lines: int = 0
    dropped_suffix_lines: int = 0


def _encode(tokenizer, text: str) -> list[int]:
    """Ids of user text. A literal "<|endoftext|>" or FIM marker in a file stays text: special
    tokens are never produced from user text (``split_special_tokens``)."""
    if not text:
        return []
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def _marker(tokenizer, text: str) -> list[int]:
    """Ids of a FIM marker: the special token itself."""
    return tokenizer.encode(text, add_special_tokens=False)


def _bos(tokenizer) -> list[int]:
    """The BOS id when the tokenizer adds one by default (DeepSeek does; SmolLM2, Qwen don't)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer.encode("x", add_special_tokens=True)
    return [bos] if probe and probe[0] == bos else []


# tokenizer -> {line: token count}. An editor asks again and again about the same file with a few
# lines changed: only new lines are tokenized (a 2k-line file costs ~10 ms to count whole).
_LINE_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _line_costs(tokenizer, lines: list[str]) -> list[int]:
    """Token count of each line on its own (memoized per tokenizer)."""
    if not lines:
        return []
    try:
        memo = _LINE_COSTS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        memo = {}
    new = list({line for line in lines if line not in memo})
    if new:
        if len(memo) + len(new) > LINE_COST_MEMO:  # full: start over with this file's lines
            memo.clear()
            new = list(set(lines))
        batch = tokenizer(new, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        memo.update(zip(new, map(len, batch), strict=True))
    return [memo[line] for line in lines]


def fit_prefix(tokenizer, prefix: str, budget: int, align: int = 1) -> tuple[str, list[int], int]:
    """Keep the last lines of ``prefix`` that fit in ``budget`` tokens; returns (text, its ids,
    dropped lines). A prefix that fits whole is tokenized once.

    The line holding the cursor is always kept (trimmed from its start if it alone is too long).
    ``align > 1`` drops lines from the start in multiples of ``align``: the window's first line
    then stays put while the file grows at the cursor, so the KV cache of the previous request
    stays a prefix of the next prompt (a window that slides by one line per request re-encodes
    everything).
    """
    if budget <= 0:
        return "", [], prefix.count("\n") + (1 if prefix else 0)
    if len(prefix) <= FITS_CHARS_PER_TOKEN * budget:  # may fit whole: one tokenization then
        ids = _encode(tokenizer, prefix)
        if len(ids) <= budget:
            return prefix, ids, 0
    lines = prefix.splitlines(keepends=True)
    costs = _line_costs(tokenizer, lines)
    total, keep = 0, 0
    for cost in reversed(costs):
        if total + cost > budget and keep > 0:
            break
        total += cost
        keep += 1
    dropped = len(lines) - keep
    aligned = -(-dropped // align) * align
    if align > 1 and aligned < len(lines):  # never align away the cursor's line
        dropped = aligned
    text = "".join(lines[dropped:])
    ids = _encode(tokenizer, text)
    while len(ids) > budget and dropped < len(lines) - 1:  # per-line counts can differ from the join
        dropped += 1
        text = "".join(lines[dropped:])
        ids = _encode(tokenizer, text)
    if len(ids) > budget:  # one very long line: cut tokens from its start
        ids = ids[len(ids) - budget :]
        text = tokenizer.decode(ids)
    return text, ids, dropped


def fit_suffix(tokenizer, suffix: str, budget: int) -> tuple[str, list[int], int]:
    """Keep the first lines of ``suffix`` that fit in ``budget`` tokens; returns (text, its ids,
    dropped lines). A suffix that fits whole is tokenized once."""
    if len(suffix) <= FITS_CHARS_PER_TOKEN * budget:
        ids = _encode(tokenizer, suffix)
        if len(ids) <= budget:
            return suffix, ids, 0
    lines = suffix.splitlines(keepends=True)
    costs = _line_costs(tokenizer, lines)
    total, keep = 0, 0
    for cost in costs:
        if total + cost > budget:
            break
        total += cost
        keep += 1
    text = "".join(lines[:keep])
    ids = _encode(tokenizer, text)
    while len(ids) > budget and keep > 0:  # per-line counts can differ from the join
        keep -= 1
        text = "".join(lines[:keep])
        ids = _encode(tokenizer, text)
    return text, ids, len(lines) - keep


def build_prompt(
    preset: dict,
    tokenizer,
    prefix: str,
    suffix: str = "",
    *,
    max_tokens: int | None = None,
    heal: bool = True,
    mode: str | None = None,
    suffix_share: float = DEFAULT_SUFFIX_SHARE,
) -> Prompt:
    """Build the prompt for a cursor between ``prefix`` and ``suffix`` (see module docstring).

    Raises ``ValueError`` for an unsupported ``mode`` or a budget too small for the FIM markers.
    """
    fim = preset.get("fim")
    max_tokens = max_tokens or preset.get("context_tokens", 2048)
    if fim is None:
        if mode not in (None, "prefix"):
            raise ValueError(f"this model has no FIM tokens; mode {mode!r} is not available (use 'prefix')")
        mode = "prefix"
    else:
        modes = tuple(fim.get("modes", ("psm",)))
        mode = mode or modes[0]
        if mode not in modes:
            raise ValueError(f"FIM mode {mode!r} not supported by this model; choose from {modes}")

    bos = _bos(tokenizer)
    if mode == "prefix":
        markers = []
        suffix_budget = 0
    else:
        markers = [_marker(tokenizer, fim[key]) for key in ("prefix", "suffix", "middle")]
        suffix_budget = int(max_tokens * suffix_share) if suffix else 0
    overhead = len(bos) + sum(len(m) for m in markers)
    if max_tokens - overhead < 8:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the prompt ({overhead} marker tokens)")

    kept_suffix, suffix_ids, dropped_suffix = (
        fit_suffix(tokenizer, suffix, suffix_budget) if suffix_budget else ("", [], 0)
    )
    kept_prefix, prefix_ids, dropped_prefix = fit_prefix(
        tokenizer, prefix, max_tokens - overhead - len(suffix_ids), align=PREFIX_LINE_ALIGN
    )

    heal_text = ""
    if heal and len(prefix_ids) >= 2:
        prefix_ids, heal_text = heal_tail(prefix_ids, vocab_for(tokenizer))

    if mode == "prefix":
        ids = bos + prefix_ids
    elif mode == "psm":
        pre, suf, mid = markers
        ids = bos + pre + prefix_ids + suf + suffix_ids + mid
    else:  # spm
        pre, suf, mid = markers
        ids = bos + suf + suffix_ids + pre + prefix_ids + mid
    if not ids:  # cursor at the very start of a prefix-only prompt: start a fresh document
        doc_start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
        if doc_start is None:
            raise ValueError("the prompt is empty and the tokenizer has no BOS/EOS token to start from")
        ids = [doc_start]
    return Prompt(
        ids=ids,
        heal_text=heal_text,
        prefix=kept_prefix,
        suffix=kept_suffix if mode != "prefix" else suffix,
        mode=mode,
        dropped_prefix_lines=dropped_prefix,
        dropped_suffix_lines=dropped_suffix,
    )
