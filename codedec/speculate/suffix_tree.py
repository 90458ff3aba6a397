"""Drafts from text already seen: the suffix-tree queries of SuffixDecoding, over token sequences.

What it is (after "SuffixDecoding", Oliaro et al., NeurIPS 2025, and its reference implementation
in Snowflake's ArcticInference): given the last tokens of the generation (the *context*), find the
longest suffix of it (at most ``max_depth`` tokens) that occurred before in some reference text,
and propose what followed it there — a path of the most frequent continuation, or a tree of the
frequent branches — with each node's empirical probability (the share of the matched occurrences
that continue through it).

Two indexes per completion (``Drafter``):

- the request's (``SuffixIndex``): the prompt, the generated tokens as they are accepted, and
  extra reference sequences — the text after the cursor, and after an edit the previous completion
  and the text the edit replaced (``codedec.speculate.references``);
- a global one (``GlobalStore``): earlier completions and accepted suggestions, bounded in tokens,
  oldest evicted.

Each proposes its best draft; the higher-scoring one (expected accepted tokens = the sum of its
nodes' probabilities) is used.

Data structure: not a pointer-based suffix tree but the same queries on a token array with an
inverted index (token -> positions). Matching is vectorised: the occurrences of the context's last
token are extended backwards together, one numpy comparison per context token, which gives every
occurrence's match length at once; the occurrences matching the longest suffix are exactly the
leaves below the suffix tree's node for it, and their continuations (read off the array) are that
node's subtree. Building costs O(n) per sequence instead of O(n · depth) trie nodes, which matters
in Python: a request's prompt is rebuilt for every keystroke. No PyPI package fits: ArcticInference
ships its C++ tree inside a vLLM plugin, and the general suffix-tree/array packages do not count
continuations.

Draft size adapts to the match: at most ``ceil(alpha · match length)`` tokens deep (capped by
``max_tokens``), and no node below ``min_prob``. Several match lengths are tried (a shorter match
has more occurrences and may predict better); the best score wins.

What it is not: the verifier (``codedec.speculate.verify``) or the policy of when to speculate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SEP = -1  # between sequences in the token array: never equal to a token id


@dataclass(frozen=True)
class DraftConfig:
    """``max_depth``: longest context suffix matched (24–64 in the reference implementations);
    ``alpha``: draft depth per matched token; ``max_tokens``: nodes per draft (tree) and depth cap;
    ``min_prob``: no node whose empirical probability is lower; ``max_occurrences``: the most
    recent occurrences of a match that are read (bounds the cost on very common contexts);
    ``tree``: propose a tree of the frequent branches (else only the most frequent path);
    ``match_tries``: how many of the longest distinct match lengths are scored."""

    max_depth: int = 32
    alpha: float = 2.0
    max_tokens: int = 32
    min_prob: float = 0.1
    max_occurrences: int = 64
    tree: bool = True
    match_tries: int = 3

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.max_tokens < 1 or self.max_occurrences < 1 or self.match_tries < 1:
            raise ValueError("max_depth, max_tokens, max_occurrences and match_tries must be >= 1")
        if not self.alpha > 0 or not 0 <= self.min_prob <= 1:
            raise ValueError(f"alpha must be > 0 and min_prob in [0, 1], got {self.alpha}, {self.min_prob}")


@dataclass(frozen=True)
class Draft:
    """A draft tree: ``tokens[i]`` with ``parents[i]`` (-1: follows the context; else an earlier
    node), ``probs[i]`` the node's empirical probability (share of matched occurrences through
    it); siblings have distinct tokens. ``score``: sum of ``probs`` (expected accepted tokens);
    ``match``: matched context length; ``source``: ``request`` or ``global``."""

    tokens: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()
    probs: tuple[float, ...] = ()
    match: int = 0
    source: str = ""

    @property
    def score(self) -> float:
        return float(sum(self.probs))

    def __len__(self) -> int:
        return len(self.tokens)


EMPTY = Draft()


class SuffixIndex:
    """Token sequences in one array with a token -> positions index (module docstring).

    ``add(seq)`` starts a new sequence, ``extend(ids)`` appends to the last one. Positions are
    never removed (a ``GlobalStore`` rebuilds to evict).
    """

    def __init__(self) -> None:
        self._buf = np.empty(1024, dtype=np.int64)
        self._n = 0
        self._where: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def tokens(self) -> np.ndarray:
        return self._buf[: self._n]

    def _append(self, ids: Sequence[int]) -> None:
        k = len(ids)
        if self._n + k > len(self._buf):
            grown = np.empty(max(2 * len(self._buf), self._n + k), dtype=np.int64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : self._n + k] = ids
        where = self._where
        for i, t in enumerate(ids, self._n):
            if t != SEP:
                lst = where.get(t)
                if lst is None:
                    where[t] = [i]
                else:
                    lst.append(i)
        self._n += k

    def add(self, seq: Sequence[int]) -> None:
        """Start a new sequence (matches never cross from one sequence into another)."""
        if self._n:
            self._append([SEP])
        self._append([int(t) for t in seq])

    def extend(self, ids: Sequence[int]) -> None:
        """Append ``ids`` to the last sequence."""
        self._append([int(t) for t in ids])

    def matches(self, context: Sequence[int], max_depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Occurrences of the context's suffixes: (positions after each occurrence [M], match
        lengths [M] >= 1), for every earlier occurrence of the context's last token that has at
        least one token after it in its sequence."""
        if not context:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        lst = self._where.get(int(context[-1]))
        if not lst:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        toks = self.tokens
        end = np.asarray(lst, dtype=np.int64)
        end = end[end + 1 < self._n]
        end = end[toks[end + 1] != SEP]  # something follows within the sequence
        length = np.ones(len(end), dtype=np.int64)
        alive = np.ones(len(end), dtype=bool)
        ctx = np.asarray(context[-max_depth:], dtype=np.int64)
        for j in range(1, len(ctx)):
            prev = end - j
            ok = alive & (prev >= 0)
            ok[ok] = toks[prev[ok]] == ctx[-1 - j]
            if not ok.any():
                break
            length += ok
            alive = ok
        return end + 1, length

    def propose(self, context: Sequence[int], config: DraftConfig, source: str = "") -> Draft:
        """The best-scoring draft over the ``match_tries`` longest distinct match lengths."""
        starts, lengths = self.matches(context, config.max_depth)
        if len(starts) == 0:
            return EMPTY
        best = EMPTY
        for m in sorted(set(lengths.tolist()), reverse=True)[: config.match_tries]:
            chosen = starts[lengths >= m][-config.max_occurrences :]  # the most recent occurrences
            depth = min(config.max_tokens, math.ceil(config.alpha * m))
            draft = _draft_from(self.tokens, chosen, depth, config, m, source)
            if draft.score > best.score:
                best = draft
        return best


def _draft_from(toks: np.ndarray, starts: np.ndarray, depth: int, config: DraftConfig, match: int,
                source: str) -> Draft:
    """The draft tree of the continuations ``toks[s : s + depth]`` (cut at a separator) of every
    start: a trie with counts; nodes with share >= ``min_prob``, at most ``max_tokens`` of them,
    most probable first (a parent is at least as probable as its child, so the kept nodes form a
    tree and come in topological order). Path mode keeps the most frequent child at each level."""
    n = len(starts)
    span = starts[:, None] + np.arange(depth)[None, :]  # [n, depth] positions of the continuations
    conts = toks[np.minimum(span, len(toks) - 1)]
    conts[span >= len(toks)] = SEP
    counts: dict[tuple[int, ...], int] = {}
    for row in conts.tolist():
        key: tuple[int, ...] = ()
        for t in row:
            if t == SEP:
                break
            key = key + (t,)
            counts[key] = counts.get(key, 0) + 1
    floor = config.min_prob * n
    if config.tree:  # most probable first; ties keep shorter (parents) first: a topological order
        kept = sorted((k for k, c in counts.items() if c >= floor), key=lambda k: (-counts[k], len(k)))
        kept = kept[: config.max_tokens]
    else:  # a chain, root first
        kept, key = [], ()
        while len(kept) < config.max_tokens:
            kids = [k for k in counts if len(k) == len(key) + 1 and k[: len(key)] == key and counts[k] >= floor]
            if not kids:
                break
            key = max(kids, key=lambda k: (counts[k], -k[-1]))
            kept.append(key)
    index = {k: i for i, k in enumerate(kept)}
    parents = tuple(index[k[:-1]] if len(k) > 1 else -1 for k in kept)
    return Draft(tuple(k[-1] for k in kept), parents, tuple(counts[k] / n for k in kept), match, source)


class GlobalStore:
    """Earlier completions and accepted suggestions, at most ``max_tokens`` tokens (oldest
    sequences evicted: the index is rebuilt from the rest). Shared by the requests of one
    service; not thread-safe (the service's worker owns it)."""

    def __init__(self, max_tokens: int = 65536) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self._seqs: deque[tuple[int, ...]] = deque()
        self._total = 0
        self.index = SuffixIndex()

    def __len__(self) -> int:
        return self._total

    def add(self, seq: Iterable[int]) -> None:
        """Remember one completion (a sequence of ids; empty ones are ignored)."""
        seq = tuple(int(t) for t in seq)[-self.max_tokens :]
        if not seq:
            return
        self._seqs.append(seq)
        self._total += len(seq)
        if self._total > self.max_tokens:
            while self._total > self.max_tokens:
                self._total -= len(self._seqs.popleft())
            self.index = SuffixIndex()
            for s in self._seqs:
                self.index.add(s)
        else:
            self.index.add(seq)


class Drafter:
    """The drafts of one completion: its own index (prompt + references + generated tokens) and
    the store's. ``sync(ids)`` brings the request index up to the state's generated ids."""

    def __init__(self, prompt_ids: Sequence[int], references: Iterable[Sequence[int]] = (),
                 store: GlobalStore | None = None, config: DraftConfig | None = None) -> None:
        self.config = config or DraftConfig()
        self.store = store
        self._prompt = list(prompt_ids)
        self._references = [list(r) for r in references if len(r)]
        self._build([])

    def _build(self, ids: Sequence[int]) -> None:
        self.index = SuffixIndex()
        for ref in self._references:
            self.index.add(ref)
        self.index.add(self._prompt + list(ids))  # last: generated tokens extend it
        self._ids = list(ids)

    def sync(self, ids: Sequence[int]) -> None:
        """Index the generated ``ids`` (appended since the last call; rebuilt after a rollback)."""
        n = len(self._ids)
        if len(ids) >= n and list(ids[:n]) == self._ids:
            if len(ids) > n:
                self.index.extend(ids[n:])
                self._ids.extend(int(t) for t in ids[n:])
        else:
            self._build(ids)

    def propose(self, ids: Sequence[int]) -> Draft:
        """The best draft after ``prompt + ids`` (the request's or the store's)."""
        self.sync(ids)
        depth = self.config.max_depth
        context = (self._prompt[-depth:] + list(ids[-depth:]))[-depth:]
        best = self.index.propose(context, self.config, "request")
        if self.store is not None and len(self.store):
            other = self.store.index.propose(context, self.config, "global")
            if other.score > best.score:
                best = other
        return best
