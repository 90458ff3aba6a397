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
   stop ends there (a stop candidate scores its own log-probability). Rollouts run on the request's
   own ``DecodeState`` and are rolled back: they leave no trace in the cache, the processors, the
   detokenizer, the stopper or the random stream (``DecodeState.rollback``).

``stats``: steps, pauses (the fraction the paper keeps small) and how often the rerank changed the
most likely token.

What it is not: calibrated here. ``make_strategy("adadec", source)`` uses the model's threshold
learned by ``codedec calibrate`` (``codedec.calibrate``), else ``FALLBACK_TAU``, an uncalibrated
value. The rollouts run one forward per token and candidate (batching them as one tree forward is
the next step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codedec.sampling import sample
from codedec.state import DecodeState
from codedec.uncertainty import token_uncertainty

FALLBACK_TAU = 1.0  # nats; uncalibrated: used when no per-model threshold is known


@dataclass(frozen=True)
class AdaDecConfig:
    """``tau``: entropy (nats) at or above which a step pauses (``math.inf``: never — plain
    decoding); ``beams``: candidates rolled out per pause (B); ``lookahead``: tokens rolled after
    each candidate (L). Defaults B = 3, L = 5 as in the paper."""

    tau: float = FALLBACK_TAU
    beams: int = 3
    lookahead: int = 5

    def __post_init__(self) -> None:
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0 (math.inf: never pause), got {self.tau}")
        if self.beams < 1 or self.lookahead < 0:
            raise ValueError(f"beams must be >= 1 and lookahead >= 0, got {self.beams}, {self.lookahead}")


def entropy(logits: torch.Tensor) -> float:
    """Entropy in nats of softmax(``logits`` [V]); ``-inf`` entries (masked tokens) count as 0."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [V]
    p = logp.exp()
    return float(-(p * logp.nan_to_num(neginf=0.0)).sum())


class AdaDecStrategy:
    """See the module docstring."""

    name = "adadec"

    def __init__(self, config: AdaDecConfig | None = None) -> None:
        self.config = config or AdaDecConfig()
        self.stats = {"steps": 0, "paused": 0, "changed": 0}

    def step(self, state: DecodeState) -> None:
        row = state.chain(state.feed().unsqueeze(0))  # [1, V]
        self.stats["steps"] += 1
        h = entropy(row[0])
        if self.config.tau == math.inf or h < self.config.tau:
            token = int(sample(row, state.params, state.rng)[0])
            state.advance((token,), (token_uncertainty(row[0], token),))
            return
        self.stats["paused"] += 1  # the rerank decides: nothing is drawn from the random stream
        logp = torch.log_softmax(row[0].float(), dim=-1)  # [V]
        chosen = int(torch.argmax(logp))
        k = min(self.config.beams, int(torch.isfinite(logp).sum()))
        top = torch.topk(logp, k)
        best, best_score = chosen, -math.inf
        for cand, lp in zip(top.indices.tolist(), top.values.tolist(), strict=True):
            score = self._rollout(state, cand, lp)
            if score > best_score:  # ties keep the more likely candidate (topk order)
                best, best_score = cand, score
        self.stats["changed"] += best != chosen
        state.advance((best,), ((h, float(logp[best].exp())),))

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
