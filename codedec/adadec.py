"""AdaDec: uncertainty-gated lookahead rerank (after "Towards Better Code Generation: Adaptive
Decoding with Uncertainty Guidance").

What it is: a decoding strategy (``codedec.strategy``). Each step:

1. the next-token distribution after the processor chain, p = softmax(processed logits), and its
   entropy H(p) in nats;
2. H < ``tau``: an ordinary step (the chain's choice, greedy or sampled, as ``plain``);
3. H >= ``tau`` (a *pause*): each of the ``beams`` most likely tokens is rolled ``lookahead``
   tokens further, greedily, through the same processors; its score is the mean log-probability
   of the candidate and its rollout (each under the processed distribution of its own step); the
   best-scoring candidate is committed — one token, then decoding goes on. A rollout that reaches a
   stop ends there (a stop candidate scores its own log-probability). Rollouts leave no trace in
   the cache, the processors, the detokenizer, the stopper or the random stream.

``stats``: steps, pauses (the fraction the paper keeps small) and how often the rerank changed the
most likely token.

What it is not: calibrated here. ``make_strategy("adadec", source)`` uses the model's threshold
learned by ``codedec calibrate`` (``codedec.calibrate``), else ``FALLBACK_TAU``, an uncalibrated
value.

Cost: the B rollouts grow as one tree in the request's cache, one forward per lookahead token
(``forward.tree_forward`` with ``context=``: L forwards of <= B tokens per pause instead of B * L
single-token ones), each branch followed by a cacheless fork of the decode state; the tree is
cropped off afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codedec.sampling import sample
from codedec.state import DecodeState
from codedec.uncertainty import entropy_of

FALLBACK_TAU = 1.0  # nats; uncalibrated: used when no per-model threshold is known


@dataclass(frozen=True)
class AdaDecConfig:
    """``tau``: entropy (nats) at or above which a step pauses (``math.inf``: never — plain
    decoding); ``beams``: candidates rolled out per pause (B); ``lookahead``: tokens rolled after
    each candidate (L). Defaults B = 3, L = 5 as in the paper. ``batched``: the B rollouts grow
    as one tree, one forward per lookahead token (``forward.tree_forward``); else one forward
    per token and candidate (the reference: same choices up to floating-point reassociation)."""

    tau: float = FALLBACK_TAU
    beams: int = 3
    lookahead: int = 5
    batched: bool = True

    def __post_init__(self) -> None:
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0 (math.inf: never pause), got {self.tau}")
        if self.beams < 1 or self.lookahead < 0:
            raise ValueError(f"beams must be >= 1 and lookahead >= 0, got {self.beams}, {self.lookahead}")


class AdaDecStrategy:
    """See the module docstring."""

    name = "adadec"

    def __init__(self, config: AdaDecConfig | None = None) -> None:
        self.config = config or AdaDecConfig()
        self.stats = {"steps": 0, "paused": 0, "changed": 0}

    def step(self, state: DecodeState) -> None:
        row = state.chain(state.feed().unsqueeze(0))  # [1, V]
        self.stats["steps"] += 1
        logp = torch.log_softmax(row[0].float(), dim=-1)  # [V]
        h = float(entropy_of(logp))
        if self.config.tau == math.inf or h < self.config.tau:
            token = int(sample(row, state.params, state.rng)[0])
            state.advance((token,), ((h, float(logp[token].exp())),))
            return
        self.stats["paused"] += 1  # the rerank decides: nothing is drawn from the random stream
        chosen = int(torch.argmax(logp))
        k = min(self.config.beams, int(torch.isfinite(logp).sum()))
        top = torch.topk(logp, k)
        cands = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        if self.config.batched:
            scores = self._rollouts_batched(state, cands)
        else:
            scores = [self._rollout(state, cand, lp) for cand, lp in cands]
        best, best_score = chosen, -math.inf
        for (cand, _lp), score in zip(cands, scores, strict=True):
            if score > best_score:  # ties keep the more likely candidate (topk order)
                best, best_score = cand, score
        self.stats["changed"] += best != chosen
        state.advance((best,), ((h, float(logp[best].exp())),))

    def _rollouts_batched(self, state: DecodeState, cands: list[tuple[int, float]]) -> list[float]:
        """The scores of ``_rollout`` for every candidate, the rollouts grown as one tree in the
        state's cache (level j holds each live branch's j-th token; one forward per level), each
        branch followed by a cacheless fork of the state (processors, text, stops). The tree is
        cropped off the cache afterwards: the state is left exactly as it was."""
        from codedec.forward import tree_forward

        context = len(state.cache)
        forks, totals, counts = [], [], []
        parents: list[int] = []  # the tree so far, in cache order
        level: list[tuple[int, int, int]] = []  # (branch, token, parent node) to add next
        for b, (cand, lp) in enumerate(cands):
            fork = state.fork(cache=False)
            fork.advance((cand,))
            forks.append(fork)
            totals.append(lp)
            counts.append(1)
            if fork.finish_reason is None and self.config.lookahead > 0:
                level.append((b, cand, -1))
        try:
            while level:
                base = len(parents)
                parents += [parent for _b, _tok, parent in level]
                rows = tree_forward(state.model, state.cache, [tok for _b, tok, _p in level], parents,
                                    context=context)  # [n, V]: after each new node
                following = []
                for k, ((b, _tok, _parent), logits) in enumerate(zip(level, rows, strict=True)):
                    fork = forks[b]
                    lps = torch.log_softmax(fork.chain(logits.unsqueeze(0))[0].float(), dim=-1)  # [V]
                    token = int(torch.argmax(lps))
                    totals[b] += float(lps[token])
                    counts[b] += 1
                    fork.advance((token,))
                    if fork.finish_reason is None and counts[b] <= self.config.lookahead:
                        following.append((b, token, base + k))
                level = following
        finally:
            state.cache.crop(context)
        return [total / n for total, n in zip(totals, counts, strict=True)]

    def _rollout(self, state: DecodeState, cand: int, logp: float) -> float:
        """Mean log-probability of ``cand`` and up to ``lookahead`` greedy tokens after it; the
        state is left exactly as it was."""
        before = len(state.ids)
        total, n = logp, 1
        state.advance((cand,))
        while state.finish_reason is None and n <= self.config.lookahead:
            row = state.chain(state.feed().unsqueeze(0))[0].float()  # [V]
            lps = torch.log_softmax(row, dim=-1)
            token = int(torch.argmax(lps))
            total += float(lps[token])
            n += 1
            state.advance((token,))
        state.rollback(len(state.ids) - before)
        state.finish_reason = None  # rollback(0) after a stop candidate leaves it set
        return total / n
