"""Lossless speculation: verify a suffix-tree draft in one forward (the ``suffix`` strategy).

What it is: a decoding strategy (``codedec.strategy``). Each step:

1. draft: the best continuation tree the request's and the global suffix indexes propose for the
   text so far (``suffix_tree.Drafter``), cut to the size that pays (``Governor``), else a plain
   step;
2. one ``forward.tree_forward`` over the unfed last token (the previous step's bonus) and every
   draft node: row 0 follows the text so far, row i + 1 follows draft node i's path;
3. the processor chain scores all rows at their own paths (grammar, monitor, rpg and healing
   apply to draft rows: the output is constrained greedy's);
4. acceptance (``codedec.kernels.tree_verify.accept``): greedy — the longest path whose every
   token is the target's argmax at its parent's row; sampled — the multi-draft rejection rule
   (each child accepted with probability p / residual, the bonus drawn from the last row without
   the rejected children), so the output distribution is the target's;
5. ``KVCache.keep_path`` keeps the context and the accepted nodes' keys/values (gathered right
   after the context: ``tree_forward`` already put them at their final positions); the state
   advances over the accepted tokens plus the bonus token — processors, detokenizer, stopper and
   random stream only ever see accepted tokens.

So greedy output is token-identical to plain greedy (up to floating-point reassociation in the
batched forward, as between a prefill and single steps), and rejected nodes leave no trace.

``Governor``: when speculation pays, learned online — the measured cost of a step by how many
tokens it feeds (one forward of n tokens is far from free on a CPU: 2–3x a single token at
n = 16 here), and how well draft scores (expected accepted tokens) predict what is accepted. A
draft is cut to the k most probable nodes that maximise expected tokens per millisecond; k = 0
is a plain step. One governor is shared by a service's requests.

``stats`` (-> ``strategy_stats``): steps, speculative steps, draft nodes, accepted draft tokens,
the acceptance-length histogram, tokens per forward, drafting time.

What it is not: the drafting (``suffix_tree``) or the kernels (``codedec.kernels.tree_verify``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from codedec import draft_tree
from codedec.forward import tree_forward
from codedec.kernels.tree_verify import accept
from codedec.sampling import Rng, SamplingParams, filter_logits, sample
from codedec.speculate.suffix_tree import Draft, DraftConfig, Drafter, GlobalStore
from codedec.state import DecodeState
from codedec.uncertainty import token_uncertainty

PRIOR_PER_TOKEN = 0.25  # a forward's extra cost per fed token (x one token's) before any is measured
PRIOR_ACCEPT = (0.5, 0.7, 0.8, 0.85, 0.9)  # per match bucket, before any such draft was verified:
# each next draft token accepted this often (a one-token match predicts far worse than a long one)
PRIOR_WEIGHT = 2.0  # ... with the weight of this many drafts
EXPLORE_EVERY = 8  # every 8th speculative step verifies twice the chosen size (if the draft has it)


class Governor:
    """Learned economics of speculation (module docstring).

    ``cost(n)``: ms of a step that feeds n tokens (an EWMA per size, interpolated between
    measured sizes, extrapolated with ``prior`` beyond them). ``calibration(match, d)``:
    accepted / predicted draft tokens at depth d for drafts from a match of that length (in
    buckets 1–2, 3–5, 6–11, 12–23, 24+; decayed sums plus a prior of ``PRIOR_WEIGHT`` drafts
    accepted with the bucket's ``PRIOR_ACCEPT`` probability q per token — q ** (d + 1) at depth
    d — so the first drafts are moderate and a few bad ones do not silence a bucket for ever): the empirical probabilities of a suffix
    match overrate deep nodes (one earlier occurrence says 1.0 all the way down) and short
    matches, by how much depends on the workload.
    """

    MATCH_BUCKETS = (3, 6, 12, 24)  # bucket b holds match lengths below MATCH_BUCKETS[b]

    def __init__(self, prior: float = PRIOR_PER_TOKEN, decay: float = 0.9) -> None:
        self.prior = prior
        self.decay = decay
        self._ms: dict[int, float] = {}
        self._chosen = 0
        self._pred: dict[int, list[float]] = {}  # match bucket -> per depth
        self._got: dict[int, list[float]] = {}

    def cost(self, n: int) -> float:
        """Expected ms of a step feeding ``n`` tokens: measured, else interpolated between the
        nearest measured sizes, else extrapolated with ``prior`` from the nearest one below."""
        ms = self._ms
        if n in ms:
            return ms[n]
        lo = max((k for k in ms if k < n), default=None)
        hi = min((k for k in ms if k > n), default=None)
        base = ms.get(1, ms[lo] if lo is not None else 1.0)
        if lo is not None and hi is not None:
            return ms[lo] + (ms[hi] - ms[lo]) * (n - lo) / (hi - lo)
        if lo is not None:
            return ms[lo] + base * self.prior * (n - lo)
        return base * (1.0 + self.prior * (n - 1))

    def record_step(self, n: int, ms: float) -> None:
        old = self._ms.get(n)
        self._ms[n] = ms if old is None else 0.7 * old + 0.3 * ms

    @classmethod
    def _bucket(cls, match: int) -> int:
        return sum(match >= edge for edge in cls.MATCH_BUCKETS)

    def record_draft(self, predicted: Sequence[float], accepted: int, match: int = 0) -> None:
        """``predicted[d]``: the summed probabilities of the verified nodes at depth d;
        ``accepted``: how many draft tokens were accepted (depths 0 .. accepted - 1); ``match``:
        the context length the draft matched."""
        pred = self._pred.setdefault(self._bucket(match), [])
        got = self._got.setdefault(self._bucket(match), [])
        while len(pred) < len(predicted):
            pred.append(0.0)
            got.append(0.0)
        for d, p in enumerate(predicted):
            pred[d] = self.decay * pred[d] + p
            got[d] = self.decay * got[d] + (1.0 if d < accepted else 0.0)

    def calibration(self, depth: int, match: int = 0) -> float:
        pred, got = self._pred.get(self._bucket(match), []), self._got.get(self._bucket(match), [])
        d = min(depth, len(pred) - 1)
        seen_pred, seen_got = (pred[d], got[d]) if d >= 0 else (0.0, 0.0)
        q = PRIOR_ACCEPT[self._bucket(match)]
        return (seen_got + PRIOR_WEIGHT * q ** (depth + 1)) / (seen_pred + PRIOR_WEIGHT)

    def choose(self, probs: Sequence[float], depths: Sequence[int], limit: int, match: int = 0,
               root_known: bool = False) -> int:
        """How many of the draft's nodes (most probable first: ``probs``, at ``depths``) to
        verify: the k <= ``limit`` that maximises (1 + sum of calibrated probs[:k]) /
        cost(1 + k); 0 = a plain step. ``root_known``: the next token's logits are known (right
        after the prefill), so a plain step costs no forward now: the draft must pay for itself,
        gain / cost(k) against 1 / cost(1). Every ``EXPLORE_EVERY``-th nonzero choice is doubled
        (within ``limit``): sizes never verified would otherwise keep their prior cost."""
        best_k, best = 0, 1.0 / self.cost(1)
        gain = 0.0
        for k, (p, d) in enumerate(zip(probs[:limit], depths[:limit], strict=False), 1):
            gain += min(1.0, self.calibration(d, match)) * p
            rate = gain / self.cost(k) if root_known else (1.0 + gain) / self.cost(1 + k)
            if rate > best:
                best_k, best = k, rate
        if best_k:
            self._chosen += 1
            if self._chosen % EXPLORE_EVERY == 0 and limit > best_k:  # measure a bigger size now and then:
                best_k = min(limit, 2 * best_k)  # its cost and deeper acceptance are otherwise never learned
        return best_k


@dataclass(frozen=True)
class SpecConfig:
    """``draft``: the drafting knobs; ``backend``: of the acceptance kernel; ``adaptive``: let the
    ``Governor`` size drafts (False: always verify the whole draft — tests, and the benchmark's
    'always on' row)."""

    draft: DraftConfig = field(default_factory=DraftConfig)
    backend: str = "auto"
    adaptive: bool = True


class SuffixStrategy:
    """See the module docstring. ``references``: extra token sequences for the request's index
    (the text after the cursor, a previous completion, replaced text); ``store``: the global
    index of earlier completions; ``governor``: shared cost/acceptance model (one per strategy
    when None)."""

    name = "suffix"

    def __init__(self, config: SpecConfig | None = None, store: GlobalStore | None = None,
                 references: Sequence[Sequence[int]] = (), governor: Governor | None = None) -> None:
        self.config = config or SpecConfig()
        self.store = store
        self.references = [list(r) for r in references]
        self.governor = governor or Governor()
        self._drafter: Drafter | None = None
        self.stats: dict = {"steps": 0, "spec_steps": 0, "draft_nodes": 0, "accepted": 0, "tokens": 0,
                            "forwards": 0, "draft_ms": 0.0, "accept_hist": {}}

    def attach(self, *, store: GlobalStore | None = None, governor: Governor | None = None,
               references: Sequence[Sequence[int]] = ()) -> None:
        """What a service shares with its requests (the global index, the governor) and the
        request's extra references; before the first step."""
        if self._drafter is not None:
            raise ValueError("attach before the first step")
        self.store = store if store is not None else self.store
        self.governor = governor if governor is not None else self.governor
        self.references = [list(r) for r in references]

    # ---- one step -------------------------------------------------------------------------
    def step(self, state: DecodeState) -> None:
        if self._drafter is None:
            self._drafter = Drafter(state.prompt_ids, self.references, self.store, self.config.draft)
        if state.logits is not None and not state.ids:
            # Right after the prefill the first token is known without a forward: show it now (the
            # editor's time to first token) and let the next step's tree hang below it. Verifying a
            # draft first would hold the first token back for a tree forward and save nothing.
            self.stats["steps"] += 1
            self._plain(state)
            self.stats["tokens"] += 1
            return
        t0 = time.perf_counter()
        draft = self._drafter.propose(state.ids)
        self.stats["draft_ms"] += (time.perf_counter() - t0) * 1000.0
        draft = self._fit(draft, state)
        self.stats["steps"] += 1
        before = len(state.ids)
        t1 = time.perf_counter()
        if len(draft) == 0:
            fed = 0 if state.logits is not None else 1  # right after the prefill the token costs no forward
            self._plain(state)
        else:
            fed = self._speculate(state, draft)
        if fed:
            self.governor.record_step(fed, (time.perf_counter() - t1) * 1000.0)
            self.stats["forwards"] += 1
        self.stats["tokens"] += len(state.ids) - before

    def _fit(self, draft: Draft, state: DecodeState) -> Draft:
        """The draft cut to nodes that can still be used — depth below the tokens left, and in
        single-line mode nothing after a newline (the line ends there) — and to the size the
        governor finds worth verifying. An unusable node's descendants are unusable too, so the
        kept nodes still form a tree."""
        if len(draft) == 0:
            return draft
        left = state.params.max_new_tokens - len(state.ids) - 1  # the bonus token takes one
        table = state.detok.vocab.token_bytes if state.params.single_line else None
        depth = draft_tree.depths(draft.parents)
        ended: list[bool] = []  # a newline on the path, this node included
        usable: list[int] = []
        for i, (p, tok) in enumerate(zip(draft.parents, draft.tokens, strict=True)):
            newline = table is not None and 0 <= tok < len(table) and b"\n" in table[tok]
            ended.append(newline or (p >= 0 and ended[p]))
            if depth[i] < left and not (p >= 0 and ended[p]):
                usable.append(i)
        limit = len(usable)
        probs = [draft.probs[i] for i in usable]
        depths = [depth[i] for i in usable]
        k = self.governor.choose(probs, depths, limit, draft.match, state.logits is not None) \
            if self.config.adaptive else limit
        if k == 0:
            return Draft(match=draft.match, source=draft.source)
        keep = usable[:k]
        new = {old: j for j, old in enumerate(keep)}
        parents = tuple(new[draft.parents[i]] if draft.parents[i] >= 0 else -1 for i in keep)
        return Draft(tuple(draft.tokens[i] for i in keep), parents, tuple(draft.probs[i] for i in keep),
                     draft.match, draft.source)

    @staticmethod
    def _plain(state: DecodeState) -> None:
        row = state.chain(state.feed().unsqueeze(0))  # [1, V]
        token = int(sample(row, state.params, state.rng)[0])
        state.advance((token,), (token_uncertainty(row[0], token),))

    def _speculate(self, state: DecodeState, draft: Draft) -> int:
        """Verify ``draft`` (module docstring, steps 2–5); returns the tokens fed."""
        unfed = state.unfed()
        if len(unfed) > 1 or (state.logits is None and not unfed):
            state.feed()  # more than the bonus token is missing (rare): encode it first
        cache = state.cache
        tokens, parents = list(draft.tokens), list(draft.parents)
        if state.logits is not None:  # the root row is known (right after the prefill)
            start = len(cache)
            rows = tree_forward(state.model, cache, tokens, parents)  # [n, V]
            logits = torch.cat([state.logits.unsqueeze(0), rows])  # [1 + n, V]
            fed = len(tokens)
        else:  # the bonus token of the last step goes first, the draft hangs below it
            (bonus,) = unfed
            start = len(cache) + 1
            logits = tree_forward(state.model, cache, [bonus] + tokens, [-1] + [p + 1 for p in parents])
            fed = len(tokens) + 1
        rows = state.chain(logits, tokens, parents)  # [1 + n, V]: processors at every node's path
        path, last, bonus_tok = verify_rows(rows, tokens, parents, state.params, state.rng, self.config.backend)
        cache.keep_path(start, [start + i for i in path], backend=self.config.backend)
        out = [tokens[i] for i in path] + [bonus_tok]
        rows_of = [parents[i] + 1 for i in path] + [last + 1]
        unc = [token_uncertainty(rows[r], t) for r, t in zip(rows_of, out, strict=True)]
        depth = draft_tree.depths(parents)
        by_depth = [0.0] * (max(depth) + 1)  # the verified nodes' summed probabilities per depth
        for d, prob in zip(depth, draft.probs, strict=True):
            by_depth[d] += prob
        self.governor.record_draft(by_depth, len(path), draft.match)
        self.stats["spec_steps"] += 1
        self.stats["draft_nodes"] += len(tokens)
        self.stats["accepted"] += len(path)
        hist = self.stats["accept_hist"]
        hist[len(path)] = hist.get(len(path), 0) + 1
        state.advance(out, unc)
        return fed


def verify_rows(rows: torch.Tensor, tokens: Sequence[int], parents: Sequence[int], params: SamplingParams,
                rng: Rng | None, backend: str = "auto") -> tuple[list[int], int, int]:
    """Acceptance over processed ``rows`` [1 + n, V] (row 0 after the context, row i + 1 after
    draft node i) -> (accepted node indices root first, the last accepted node or -1, the bonus
    token drawn from row ``last + 1``). Greedy: argmax agreement. Sampled: the multi-draft rule
    (module docstring, step 4) with draws from ``rng``; the bonus comes from the last row with
    the rejected children's tokens removed, so every output token is distributed as the
    target's (``filter_logits`` + softmax of its row)."""
    par_t = torch.tensor([list(parents)], dtype=torch.long)  # [1, n]
    tok_t = torch.tensor([list(tokens)], dtype=torch.long)  # [1, n]
    if params.greedy:
        target = torch.argmax(rows, dim=-1)  # [1 + n]
        acc = accept(par_t, tok_t, target=target.unsqueeze(0), backend=backend)
        last = int(acc.last[0])
        return acc.path[0, : int(acc.length[0])].tolist(), last, int(target[last + 1])
    gen = rng.torch if isinstance(rng, Rng) else rng
    probs = torch.softmax(filter_logits(rows, params), dim=-1)  # [1 + n, V]
    p_node = probs[par_t[0] + 1, tok_t[0]].unsqueeze(0)  # [1, n]: each node's token under its parent's row
    u = torch.rand(len(tokens), generator=gen).unsqueeze(0)  # [1, n]
    acc = accept(par_t, tok_t, p_node=p_node, u=u, backend=backend)
    last = int(acc.last[0])
    row = probs[last + 1].clone()  # [V]
    rejected = [t for t, p in zip(tokens, parents, strict=True) if p == last]
    if rejected:
        row[rejected] = 0.0
    if not float(row.sum()) > 0:  # cannot happen with exact arithmetic (a sure child is accepted)
        row = probs[last + 1]
    bonus = int(torch.multinomial(row, 1, generator=gen))
    return acc.path[0, : int(acc.length[0])].tolist(), last, bonus
