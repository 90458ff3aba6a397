"""Prompt assembly for a cursor: prefix/suffix -> token ids, per model family, within a budget.

``build_prompt(preset, tokenizer, prefix, suffix, max_tokens=..., heal=True)`` returns a ``Prompt``:

1. Budget: the suffix gets at most ``suffix_share`` of ``max_tokens`` (and only what it needs),
   the prefix the rest. Whole lines are dropped from the far end of each side — the start of the
   prefix, the end of the suffix — so the lines nearest the cursor are always kept. The prefix
   drops lines in blocks of ``PREFIX_LINE_ALIGN`` so its start is stable while the user types
   (KV-cache prefix reuse across requests).
2. Token healing (on by default): the prefix's trailing token(s) are removed and returned as
   ``heal_text`` (see ``codedec.context.healing``).
3. Layout from the preset's ``fim`` entry (after the repository block, when one is given): PSM ``<pre>prefix<suf>suffix<mid>`` or SPM
   ``<suf>suffix<pre>prefix<mid>`` (the cursor boundary stays at the end of the prompt in both);
   models without FIM tokens get the prefix only (the suffix stays on the ``Prompt`` for decoding
   components that use it, e.g. grammar constraints).

What it is not: cross-file context (gathered by ``context/repository.py``, fitted and laid out by
``context/crossfile.py``, compressed by ``context/longcodezip.py``; this module only places its ids).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from codedec.context.healing import heal_tail
from codedec.vocab import vocab_for

DEFAULT_SUFFIX_SHARE = 0.25
PREFIX_LINE_ALIGN = 32  # the prefix window's start moves in steps of this many lines
FITS_CHARS_PER_TOKEN = 4  # text longer than this many chars per budget token is not tried whole
LINE_COST_MEMO = 65536  # remembered per-line token counts per tokenizer (least recently used evicted)


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


def encode_text(tokenizer, text: str) -> list[int]:
    """Ids of user text. A literal "<|endoftext|>" or FIM marker in a file stays text: special
    tokens are never produced from user text (``split_special_tokens``)."""
    if not text:
        return []
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def encode_marker(tokenizer, text: str) -> list[int]:
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
# lines changed: only new lines are tokenized. Bounded: the least recently used are evicted.
_LINE_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BATCH_LINES = 64  # lines counted per tokenizer call while walking away from the cursor
TOO_LONG_CHARS_PER_TOKEN = 16  # a line over this many chars per budget token is not tokenized to count


def _line_costs(tokenizer, lines: list[str]) -> list[int]:
    """Token count of each line on its own (memoized per tokenizer; past ``LINE_COST_MEMO``
    entries the least recently used are evicted)."""
    if not lines:
        return []
    try:
        memo = _LINE_COSTS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        memo = {}
    new = list(dict.fromkeys(line for line in lines if line not in memo))
    counts = dict(zip(new, map(len, tokenizer(new, add_special_tokens=False, split_special_tokens=True)
                               ["input_ids"]), strict=True)) if new else {}
    costs = [counts[line] if line in counts else memo[line] for line in lines]
    for line, cost in zip(lines, costs, strict=True):  # most recently used last
        memo.pop(line, None)
        memo[line] = cost
    if len(memo) > LINE_COST_MEMO:
        for line in list(memo)[: len(memo) - LINE_COST_MEMO]:
            del memo[line]
    return costs


def _lines_backward(text: str):
    """(start, end) of each line of ``text`` (a line ends after its ``\\n``), last line first."""
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end - 1) + 1
        yield start, end
        end = start


def _lines_forward(text: str):
    """(start, end) of each line of ``text``, first line first."""
    start = 0
    while start < len(text):
        nl = text.find("\n", start)
        end = len(text) if nl < 0 else nl + 1
        yield start, end
        start = end


def _walk(tokenizer, text: str, spans, budget: int) -> list[tuple[int, int]]:
    """The line ``spans`` (ordered away from the cursor) kept while their token counts fit in
    ``budget``. Lines are counted in batches, so the work is bounded by the window, not by the
    text; a line too long to possibly fit is not tokenized. The first line is always kept (it
    may be too long on its own: the caller cuts it)."""
    kept: list[tuple[int, int]] = []
    total = 0
    spans = iter(spans)
    while batch := [span for _, span in zip(range(_BATCH_LINES), spans, strict=False)]:
        lines = [text[a:b] for a, b in batch]
        short = [line for line in lines if len(line) <= TOO_LONG_CHARS_PER_TOKEN * budget]
        costs = dict(zip(short, _line_costs(tokenizer, short), strict=True))
        for span, line in zip(batch, lines, strict=True):
            cost = costs.get(line, budget + 1)
            if total + cost > budget and kept:
                return kept
            total += cost
            kept.append(span)
            if total > budget:
                return kept
    return kept


def _line_count(text: str) -> int:
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


def _stable_tail(tokenizer, text: str, line_start: int, budget: int) -> tuple[str, list[int]]:
    """The end of ``text``'s last line (from ``line_start``) cut to fit ``budget`` tokens at a
    character offset that moves in steps of ``step`` characters: typing at the end of a very
    long line keeps the window's start (and so the KV cache) until the line grows by a step."""
    step = max(64, budget)  # about a quarter of what fits, at 4 chars per token
    room = FITS_CHARS_PER_TOKEN * budget
    excess = len(text) - line_start - room
    cut = line_start + max(0, -(-excess // step) * step)
    ids = encode_text(tokenizer, text[cut:])
    while len(ids) > budget and cut < len(text):
        cut = min(len(text), cut + step)
        ids = encode_text(tokenizer, text[cut:])
    return text[cut:], ids


def fit_prefix(tokenizer, prefix: str, budget: int, align: int = 1) -> tuple[str, list[int], int]:
    """Keep the last lines of ``prefix`` that fit in ``budget`` tokens; returns (text, its ids,
    dropped lines). A prefix that fits whole is tokenized once; otherwise only the lines near
    the cursor are looked at (the cost does not grow with the file).

    The line holding the cursor is always kept (a very long one is cut from its start at a
    stable offset, :func:`_stable_tail`). ``align > 1`` drops lines from the start in multiples of
    ``align``: the window's first line then stays put while the file grows at the cursor, so the
    KV cache of the previous request stays a prefix of the next prompt (a window that slides by
    one line per request re-encodes everything).
    """
    n_lines = _line_count(prefix)
    if budget <= 0:
        return "", [], n_lines
    if len(prefix) <= FITS_CHARS_PER_TOKEN * budget:  # may fit whole: one tokenization then
        ids = encode_text(tokenizer, prefix)
        if len(ids) <= budget:
            return prefix, ids, 0
    kept = _walk(tokenizer, prefix, _lines_backward(prefix), budget)
    keep = len(kept)
    dropped = n_lines - keep
    aligned = -(-dropped // align) * align
    if align > 1 and aligned < n_lines:  # never align away the cursor's line
        keep = n_lines - aligned
    text = prefix[kept[keep - 1][0]:]
    ids = _encode_bounded(tokenizer, text, budget)
    while ids is None and keep > 1:  # per-line counts can differ from the join
        keep -= 1
        text = prefix[kept[keep - 1][0]:]
        ids = _encode_bounded(tokenizer, text, budget)
    if ids is None:  # the cursor's line alone is too long
        text, ids = _stable_tail(tokenizer, prefix, kept[0][0], budget)
    return text, ids, n_lines - keep


def _encode_bounded(tokenizer, text: str, budget: int) -> list[int] | None:
    """``text``'s ids if they fit in ``budget``, else None (a text far too long is not tokenized)."""
    if len(text) > TOO_LONG_CHARS_PER_TOKEN * budget:
        return None
    ids = encode_text(tokenizer, text)
    return ids if len(ids) <= budget else None


def fit_suffix(tokenizer, suffix: str, budget: int) -> tuple[str, list[int], int]:
    """Keep the first lines of ``suffix`` that fit in ``budget`` tokens; returns (text, its ids,
    dropped lines). A suffix that fits whole is tokenized once; otherwise only the lines near
    the cursor are looked at."""
    if len(suffix) <= FITS_CHARS_PER_TOKEN * budget:
        ids = encode_text(tokenizer, suffix)
        if len(ids) <= budget:
            return suffix, ids, 0
    n_lines = _line_count(suffix)
    kept = _walk(tokenizer, suffix, _lines_forward(suffix), budget)
    keep = len(kept)
    ids = _encode_bounded(tokenizer, suffix[: kept[-1][1]], budget) if kept else []
    while ids is None:  # per-line counts can differ from the join; a first line too long
        keep -= 1
        ids = _encode_bounded(tokenizer, suffix[: kept[keep - 1][1]], budget) if keep else []
    return suffix[: kept[keep - 1][1]] if keep else "", ids, n_lines - keep


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
    context_ids: Sequence[int] = (),
) -> Prompt:
    """Build the prompt for a cursor between ``prefix`` and ``suffix`` (see module docstring).

    ``context_ids``: the repository block (``codedec.context.crossfile``), placed first (after
    BOS, before the FIM markers) and paid for out of ``max_tokens``.

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
        markers = [encode_marker(tokenizer, fim[key]) for key in ("prefix", "suffix", "middle")]
        suffix_budget = int((max_tokens - len(context_ids)) * suffix_share) if suffix else 0
    context_ids = list(context_ids)
    overhead = len(bos) + sum(len(m) for m in markers) + len(context_ids)
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
        ids = bos + context_ids + prefix_ids
    elif mode == "psm":
        pre, suf, mid = markers
        ids = bos + context_ids + pre + prefix_ids + suf + suffix_ids + mid
    else:  # spm
        pre, suf, mid = markers
        ids = bos + context_ids + suf + suffix_ids + pre + prefix_ids + mid
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
