"""Decoding strategies: how the next token(s) of a ``DecodeState`` are chosen.

A strategy's ``step(state)`` advances the state by at least one token or finishes it (a stop);
the engine calls it until ``state.finish_reason`` is set, checking cancellation and the time
budget between steps. Strategies that propose several tokens per step (speculation) or look ahead
(AdaDec) fork or roll back the state; a rejected branch leaves no trace (``codedec.state``).

- ``PlainStrategy``: one forward, the processor chain, one sampled (or greedy) token per step —
  the classic loop.
- ``adadec`` (``codedec.adadec.AdaDecStrategy``): plain steps, except where the processed
  distribution's entropy is high: there the top candidates are rolled a few tokens ahead and the
  most likely continuation's first token is committed.
- ``suffix`` (``codedec.speculate.verify.SuffixStrategy``): lossless speculation — drafts from
  suffix indexes over the prompt, the text around the cursor and earlier completions, verified in
  one tree forward; greedy output is plain greedy's.

What it is not: the request loop (``codedec.engine``) or the state's life cycle.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from codedec.sampling import sample
from codedec.state import DecodeState
from codedec.uncertainty import token_uncertainty


@runtime_checkable
class Strategy(Protocol):
    """``name`` is reported in stats; ``step`` advances ``state`` by >= 1 token or finishes it."""

    name: str

    def step(self, state: DecodeState) -> None: ...


class PlainStrategy:
    """One token per forward: logits -> processors -> sample -> advance (with the token's entropy
    and probability under the processed distribution)."""

    name = "plain"

    def step(self, state: DecodeState) -> None:
        logits = state.feed()  # [V]
        row = state.chain(logits.unsqueeze(0))  # [1, V]
        token = int(sample(row, state.params, state.rng)[0])
        state.advance((token,), (token_uncertainty(row[0], token),))


def _adadec(source: str | None = None) -> Strategy:
    from codedec.adadec import FALLBACK_TAU, AdaDecConfig, AdaDecStrategy
    from codedec.calibrate import load_tau

    tau = load_tau(source)
    return AdaDecStrategy(AdaDecConfig(tau=FALLBACK_TAU if tau is None else tau))


def _plain(source: str | None = None) -> Strategy:
    return PlainStrategy()


def _suffix(source: str | None = None) -> Strategy:
    from codedec.speculate.verify import SuffixStrategy

    return SuffixStrategy()


STRATEGIES = {"plain": _plain, "adadec": _adadec, "suffix": _suffix}


def make_strategy(name: str, source: str | None = None) -> Strategy:
    """A strategy by name (a fresh one: strategies may keep per-request stats); ``source``: where
    the model's weights were read from (``LoadedModel.source``: adadec reads its calibrated
    threshold by it). Raises ``ValueError`` listing the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown decoding strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](source)
