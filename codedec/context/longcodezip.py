"""LongCodeZip (Shi et al., ASE 2025): compress cross-file code to a token budget with the model itself.

What it is: ``LongCodeZip.compress(chunks, query, budget)`` -> the chunks cut down to at most
``budget`` tokens of code, in two stages:

1. Coarse (function level). Every chunk is split into units with tree-sitter (whole functions,
   methods, class headers; ``codedec.context.outline``). The query ``q`` is the code just before
   the cursor (its last ``query_lines`` whole lines, at most ``query_tokens`` tokens). Each unit
   ``c`` is scored by approximate mutual information, the drop of the query's mean token NLL
   when ``c`` precedes it: ``AMI(c) = NLL(q) - NLL(q | c)`` (perplexities in log space). One
   batched, cacheless forward per row ``[c ; q]`` (``codedec.forward.token_nll``), rows cached by
   (unit, query) content hash. Units are taken by decreasing AMI while they fit in
   ``coarse_ratio * budget`` (all of ``budget`` in coarse-only mode).
   Only the first units of the input, up to ``candidates`` times the budget, are scored (the
   gatherer's priority order is the prior; scoring everything a workspace offers would cost a
   forward over all of it).
2. Fine (block level, skipped in coarse-only mode or when the coarse stage already fits). The same
   forward gives each kept unit's own token NLLs; per-line means mark perplexity spikes (a line
   above both neighbours by ``spike_k`` standard deviations ends a block, as do blank lines).
   Each unit's first block (its signature) is kept; the other blocks are chosen by a 0/1
   knapsack on ``value = tokens * mean NLL * (1 + overlap with the query's identifiers) * unit
   weight (its AMI rank)`` under the rest of the budget. A dropped run of blocks leaves one
   ``...`` line at its indentation, so the code still reads as code.

The output keeps the input's chunk order and, inside a chunk, the units' order (a prompt built from
it changes little while the cursor moves: KV prefix reuse). Deterministic for a given model.

What it is not: gathering the chunks (``codedec.context.repository``) or laying them out
(``codedec.context.crossfile``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from codedec.context.outline import outline
from codedec.context.repository import ContextChunk, identifiers

NllFn = Callable[[list[list[int]]], list]  # rows of ids -> per-row NLL tensors [len(row) - 1]
EncodeLines = Callable[[list[str]], list[list[int]]]  # lines (newline included) -> ids of each
SCORE_CACHE = 4096
ELISION_TOKENS = 3  # what one "    ...\n" line costs, about


@dataclass(frozen=True)
class ZipConfig:
    """``fine=False``: coarse-only (one stage; for slow machines it is the same forwards, but
    nothing is pruned inside a function). ``coarse_ratio``: how much more than the budget the
    coarse stage keeps for the fine stage to prune."""

    query_lines: int = 8
    query_tokens: int = 64
    max_unit_tokens: int = 256  # a longer unit is scored on its first this-many tokens
    coarse_ratio: float = 1.5
    candidates: float = 4.0  # only the first units (input order) up to this many times the budget are scored
    fine: bool = True
    spike_k: float = 0.5
    batch_tokens: int = 512


@dataclass
class ZipResult:
    """The compressed chunks and what it took: tokens before/after, units scored vs found in
    the cache, time in ms."""

    chunks: list[ContextChunk]
    tokens_in: int = 0
    tokens_out: int = 0
    units: int = 0
    scored: int = 0
    cached: int = 0
    unscored: int = 0  # left for a later call by the deadline
    ms: float = 0.0

    @property
    def ratio(self) -> float:
        return self.tokens_in / self.tokens_out if self.tokens_out else math.inf


@dataclass
class _Unit:
    chunk: int
    order: int
    lines: list[str]
    line_ids: list[list[int]]
    ami: float = 0.0
    self_nll: list[float] = field(default_factory=list)  # per token of the unit (first: the mean)
    starts: list[int] = field(init=False)  # token offset of each line, and the total last

    def __post_init__(self) -> None:
        self.starts = [0, *itertools.accumulate(map(len, self.line_ids))]

    @property
    def tokens(self) -> int:
        return self.starts[-1]

    def span(self, a: int, b: int) -> int:
        """Tokens of lines [a, b)."""
        return self.starts[b] - self.starts[a]

    @property
    def ids(self) -> list[int]:
        return [t for ids in self.line_ids for t in ids]


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=12).hexdigest()


def query_text(prefix: str, lines: int) -> str:
    """The query of a cursor: the last ``lines`` whole lines of ``prefix`` before the cursor's
    line (the line being typed is left out, so the query — and the cache — holds while typing)."""
    head = prefix[: prefix.rfind("\n") + 1]
    return "".join(head.splitlines(keepends=True)[-lines:])


class LongCodeZip:
    """Compressor bound to one model (``nll``) and its tokenizer (``encode_lines``)."""

    def __init__(self, nll: NllFn, encode_lines: EncodeLines, config: ZipConfig | None = None) -> None:
        self.nll, self.encode_lines = nll, encode_lines
        self.config = config or ZipConfig()
        self._scores: OrderedDict[tuple[str, str], tuple[float, list[float]]] = OrderedDict()
        self._base: OrderedDict[str, float] = OrderedDict()  # query -> its mean NLL alone
        self._line_ids: OrderedDict[str, list[int]] = OrderedDict()

    # ---- tokens

    def _encode(self, lines: list[str]) -> list[list[int]]:
        new = [line for line in dict.fromkeys(lines) if line not in self._line_ids]
        if new:
            for line, ids in zip(new, self.encode_lines(new), strict=True):
                self._line_ids[line] = list(ids)
            while len(self._line_ids) > 16 * SCORE_CACHE:
                self._line_ids.popitem(last=False)
        return [self._line_ids[line] for line in lines]

    def count(self, text: str) -> int:
        return sum(map(len, self._encode(text.splitlines(keepends=True))))

    # ---- stage 0: units

    def _units(self, chunks: Sequence[ContextChunk]) -> list[_Unit]:
        units: list[_Unit] = []
        for c, chunk in enumerate(chunks):
            for unit in outline(chunk.text).units:
                if not unit.text.strip():
                    continue
                lines = unit.text.splitlines(keepends=True)
                units.append(_Unit(c, len(units), lines, self._encode(lines)))
        return units

    # ---- stage 1: coarse

    def _score(self, units: list[_Unit], query: str, result: ZipResult, deadline: float | None = None) -> None:
        """Fill each unit's ``ami`` and ``self_nll`` (cached by unit and query). With a
        ``deadline`` (``perf_counter`` time) the units are scored in groups of rows, input order
        first, until it passes; the rest stay unscored (``ami`` -inf, flat NLL) this time and are
        scored by a later call with the same query — compression never holds a request up for
        longer than one group."""
        cfg = self.config
        q_ids = [t for ids in self._encode(query.splitlines(keepends=True)) for t in ids][-cfg.query_tokens:]
        if not q_ids:
            return
        qkey = _hash(query)
        anchor = self._encode(["\n"])[0][:1] or q_ids[:1]
        todo: list[_Unit] = []
        for u in units:
            hit = self._scores.get((_hash("".join(u.lines)), qkey))
            if hit is None:
                todo.append(u)
            else:
                u.ami, u.self_nll = hit
                result.cached += 1
        for u in todo:  # until scored: last in the ranking, no spikes inside
            u.ami, u.self_nll = -math.inf, [1.0] * u.tokens
        if not todo:
            return
        rows = [u.ids[: cfg.max_unit_tokens] + q_ids for u in todo]
        base = self._base.get(qkey) if deadline is not None else None  # one call as ever without a deadline
        head = [] if base is not None else [anchor + q_ids]
        if deadline is None:
            groups = [list(range(len(rows)))]
        else:
            groups, group, size = [], [], 0
            for i, row in enumerate(rows):
                if group and size + len(row) > 2 * cfg.batch_tokens:
                    groups.append(group)
                    group, size = [], 0
                group.append(i)
                size += len(row)
            groups.append(group)
        done: list[int] = []
        outs: dict[int, object] = {}
        for n, group in enumerate(groups):
            if deadline is not None and time.perf_counter() > deadline:
                break
            nll = self.nll((head if n == 0 else []) + [rows[i] for i in group])
            if n == 0 and head:
                base = self._base[qkey] = float(nll[0][: len(q_ids)].mean())
                nll = nll[1:]
            outs.update(zip(group, nll, strict=True))
            done += group
        result.unscored += len(todo) - len(done)
        if base is None:
            return
        for i in done:
            u, row, out = todo[i], rows[i], outs[i]
            s = len(row) - len(q_ids)  # q's first token is predicted at index s - 1
            u.ami = base - float(out[s - 1:].mean())
            own = out[: s - 1].tolist()
            mean = sum(own) / len(own) if own else base
            u.self_nll = [mean, *own] + [mean] * (u.tokens - s)  # tokens past max_unit_tokens: the mean
            self._scores[(_hash("".join(u.lines)), qkey)] = (u.ami, u.self_nll)
        while len(self._scores) > SCORE_CACHE:
            self._scores.popitem(last=False)
        while len(self._base) > SCORE_CACHE:
            self._base.popitem(last=False)
        result.scored += len(done)

    # ---- stage 2: fine

    def _blocks(self, u: _Unit) -> list[tuple[int, int]]:
        """Line ranges [a, b) of ``u``'s blocks: ends after a perplexity spike or a blank line."""
        means = []
        for i in range(len(u.line_ids)):
            vals = u.self_nll[u.starts[i]: u.starts[i + 1]]
            means.append(sum(vals) / len(vals) if vals else 0.0)
        n = len(means)
        mu = sum(means) / n
        sd = math.sqrt(sum((m - mu) ** 2 for m in means) / n)
        cuts = set()
        for i in range(n - 1):
            if not u.lines[i].strip():
                cuts.add(i)
            elif 0 < i and means[i] >= means[i - 1] and means[i] >= means[i + 1] \
                    and max(means[i] - means[i - 1], means[i] - means[i + 1]) >= self.config.spike_k * sd:
                cuts.add(i)
        blocks, start = [], 0
        for i in sorted(cuts):
            blocks.append((start, i + 1))
            start = i + 1
        if start < n:
            blocks.append((start, n))
        return blocks

    def _fine(self, kept: list[_Unit], query: str, budget: int) -> dict[int, list[tuple[int, int]]]:
        """Blocks kept per unit (``order`` -> line ranges) within ``budget`` tokens."""
        q_ids = identifiers(query)
        ranked = sorted(kept, key=lambda u: (-u.ami, u.order))
        weight = {u.order: 1.0 + (len(ranked) - r) / len(ranked) for r, u in enumerate(ranked)}
        forced: dict[int, list[tuple[int, int]]] = {}
        items: list[tuple[float, int, int, tuple[int, int]]] = []  # value, tokens, unit, block
        used = 0
        for u in ranked:
            blocks = self._blocks(u)
            first = blocks[0]
            cost = u.span(*first) + (ELISION_TOKENS if len(blocks) > 1 else 0)
            if used + cost > budget:
                continue  # not even its signature fits: the unit goes
            used += cost
            forced[u.order] = [first]
            for a, b in blocks[1:]:
                tokens = u.span(a, b)
                if tokens == 0:
                    continue
                info = sum(u.self_nll[u.starts[a]: u.starts[b]]) / tokens
                overlap = len(identifiers("".join(u.lines[a:b])) & q_ids) / (len(q_ids) or 1)
                items.append((tokens * info * (1.0 + 2.0 * overlap) * weight[u.order], tokens, u.order, (a, b)))
        chosen = _knapsack([(v, t) for v, t, _, _ in items], budget - used)
        for i in chosen:
            forced[items[i][2]].append(items[i][3])
        return {k: sorted(v) for k, v in forced.items()}

    # ---- the whole

    def compress(self, chunks: Sequence[ContextChunk], query: str, budget: int,
                 deadline: float | None = None) -> ZipResult:
        """``chunks`` cut to at most ``budget`` tokens of code (module docstring); ``query``:
        the code before the cursor (``query_text``); ``deadline``: see ``_score``."""
        t0 = time.perf_counter()
        units = self._units(chunks)
        result = ZipResult([], tokens_in=sum(u.tokens for u in units), units=len(units))
        if result.tokens_in <= budget:
            result.chunks, result.tokens_out = list(chunks), result.tokens_in
            result.ms = (time.perf_counter() - t0) * 1000.0
            return result
        cfg = self.config
        pool, room = [], int(cfg.candidates * budget)
        for u in units:  # the input's priority order decides which units are worth a forward
            if u.tokens <= room:
                pool.append(u)
                room -= u.tokens
        units = pool
        self._score(units, query, result, deadline)
        coarse_budget = int(budget * cfg.coarse_ratio) if cfg.fine else budget
        kept, total = [], 0
        for u in sorted(units, key=lambda u: (-u.ami, u.order)):
            if total + u.tokens <= coarse_budget:
                kept.append(u)
                total += u.tokens
        if cfg.fine and total > budget:
            blocks = self._fine(kept, query, budget)
        else:
            blocks = {u.order: [(0, len(u.lines))] for u in kept}
        texts: dict[int, list[str]] = {}
        out_tokens = 0
        for u in units:  # input order
            if u.order not in blocks:
                continue
            parts, last = [], 0
            for a, b in blocks[u.order]:
                if a > last:
                    parts.append(_elision(u.lines[last:a]))
                    out_tokens += ELISION_TOKENS
                parts.extend(u.lines[a:b])
                out_tokens += u.span(a, b)
                last = b
            if last < len(u.lines):
                parts.append(_elision(u.lines[last:]))
                out_tokens += ELISION_TOKENS
            texts.setdefault(u.chunk, []).append("".join(parts))
        result.chunks = [replace(chunk, text="".join(texts[c])) for c, chunk in enumerate(chunks) if c in texts]
        result.tokens_out = out_tokens
        result.ms = (time.perf_counter() - t0) * 1000.0
        return result


def _elision(lines: list[str]) -> str:
    """One ``...`` line at the indentation of the first non-blank of ``lines``."""
    for line in lines:
        if line.strip():
            return line[: len(line) - len(line.lstrip())] + "...\n"
    return "...\n"


def _knapsack(items: list[tuple[float, int]], capacity: int, quantum: int = 4) -> list[int]:
    """Indices of a 0/1 knapsack solution (values, integer weights) under ``capacity``; weights
    are rounded up to multiples of ``quantum`` tokens so the table stays small."""
    if capacity <= 0 or not items:
        return []
    cap = capacity // quantum
    w = [max(1, -(-t // quantum)) for _, t in items]
    best = [0.0] * (cap + 1)
    take = [[False] * (cap + 1) for _ in items]
    for i, (value, _) in enumerate(items):
        for c in range(cap, w[i] - 1, -1):
            if best[c - w[i]] + value > best[c]:
                best[c] = best[c - w[i]] + value
                take[i][c] = True
    chosen, c = [], cap
    for i in range(len(items) - 1, -1, -1):
        if take[i][c]:
            chosen.append(i)
            c -= w[i]
    return sorted(chosen)
