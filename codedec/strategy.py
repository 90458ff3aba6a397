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

What it is not: the request loop (``codedec.engine``) or the state's life cycle.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from codedec.sampling import sample
from codedec.state import DecodeState


@runtime_checkable
class Strategy(Protocol):
    """``name`` is reported in stats; ``step`` advances ``state`` by >= 1 token or finishes it."""

    name: str

    def step(self, state: DecodeState) -> None: ...


class PlainStrategy:
    """One token per forward: logits -> processors -> sample -> advance."""

    name = "plain"

    def step(self, state: DecodeState) -> None:
        logits = state.feed()  # [V]
        row = state.chain(logits.unsqueeze(0))  # [1, V]
        token = int(sample(row, state.params, state.rng)[0])
        state.advance((token,))


def _adadec() -> Strategy:
    from codedec.adadec import AdaDecStrategy

    return AdaDecStrategy()


STRATEGIES = {"plain": PlainStrategy, "adadec": _adadec}


def make_strategy(name: str) -> Strategy:
    """A strategy by name (a fresh one: strategies may keep per-request stats); raises
    ``ValueError`` listing the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown decoding strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
