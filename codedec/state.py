"""The decode state of one generation: everything a strategy may branch, advance and rewind.

What it is (DESIGN §1): one object holding the KV cache, the processor chain, the incremental
detokenizer, the text stopper, the random generator and the generated ids, with one life cycle:

- ``advance(tokens, uncertainty=None) -> int | None``  accept tokens in order until a stop (with
  each token's (entropy, probability) under the distribution it was chosen from, when the
  strategy knows it: ``uncertainty`` keeps them, parallel to ``ids``); returns the index of the
  stop within ``tokens`` (``None`` when there was none): a stop id at ``i`` is not accepted, a
  stop string completed by ``tokens[i]`` is (the text ends inside it). ``finish_reason`` says
  which (``stop``, ``stop_string``, ``newline``, ``block_end``), or ``length`` once
  ``max_new_tokens`` are in;
- ``rollback(n)``  forget the last n accepted tokens in every part, exactly as if never advanced;
- ``fork()``       an independent copy (cache tensors cloned) for a lookahead branch;
- ``reset()``      back to no generated tokens.

Invariant: ``cache.tokens`` is a prefix of ``prompt_ids + ids``. ``logits`` [V] are the next-token
logits after all of ``prompt_ids + ids`` when known (the cache then holds all of them), else
``None``; ``feed()`` runs the forwards that make them known. A strategy that computed them itself
(a verified draft) sets ``logits`` after ``advance``.

What it is not: a strategy (how tokens are chosen: ``codedec.strategy``) or the request loop
(cancellation, time budget, streaming: ``codedec.engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from codedec.cache import KVCache, common_prefix_len
from codedec.detokenize import IncrementalDetokenizer
from codedec.forward import prefill
from codedec.processors import ProcessorChain
from codedec.sampling import SamplingParams, make_generator
from codedec.stopping import TextStopper
from codedec.vocab import Vocab

_UNKNOWN = (float("nan"), float("nan"))


class DecodeState:
    """Cache + processor chain + detokenizer + stopper + generator + generated ids (see module)."""

    def __init__(
        self,
        model,
        cache: KVCache,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        chain: ProcessorChain,
        vocab: Vocab,
        stop_ids: Iterable[int] = (),
    ) -> None:
        if len(prompt_ids) == 0:
            raise ValueError("the prompt is empty: at least one token id is needed")
        if common_prefix_len(cache.tokens, prompt_ids) != len(cache):
            raise ValueError(f"the cache ({len(cache)} tokens) does not hold a prefix of the prompt")
        self.model = model
        self.cache = cache
        self.prompt_ids = [int(i) for i in prompt_ids]
        self.params = params
        self.chain = chain
        self.stop_ids = frozenset(stop_ids) | frozenset(params.stop_token_ids)
        self.detok = IncrementalDetokenizer(vocab)
        self.stopper = TextStopper(params.stop_strings, params.single_line, params.block_indent)
        self.rng = make_generator(params, getattr(model, "device", "cpu"))
        self.ids: list[int] = []
        self.uncertainty: list[tuple[float, float]] = []  # per id: (entropy nats, probability), nan if unknown
        self.logits: torch.Tensor | None = None  # [V]
        self.finish_reason: str | None = "length" if params.max_new_tokens == 0 else None
        self.safe_len = 0  # visible text that is final (no stop string can still start in it)
        self.shown = 0  # visible text already taken by take_text
        self._safe_marks: list[int] = []  # safe_len before each accepted token

    # ---- text ---------------------------------------------------------------------------------
    def _visible(self, full: str) -> str:
        skip = self.params.skip_text
        if not skip:
            return full
        return full[len(skip) :] if full.startswith(skip) else ""

    @property
    def text(self) -> str:
        """The completion text that is final so far (held-back bytes and possible stop-string
        starts excluded; a stop string and what follows it never appear)."""
        return self._visible(self.detok.text)[: self.safe_len]

    def take_text(self) -> str:
        """The final text not taken before (the engine streams it)."""
        delta = self._visible(self.detok.text)[self.shown : self.safe_len]
        self.shown = max(self.shown, self.safe_len)
        return delta

    def take_tail(self) -> str:
        """At the end of a generation that did not stop on a string: the held-back rest (an
        unfinished character becomes U+FFFD). Leaves the state unchanged except ``shown``."""
        if self.finish_reason in ("stop_string", "newline", "block_end"):
            return ""
        tail = self._visible(self.detok.final_text())[self.shown :]
        self.shown += len(tail)
        return tail

    # ---- life cycle ---------------------------------------------------------------------------
    def advance(self, tokens: Sequence[int],
                uncertainty: Sequence[tuple[float, float]] | None = None) -> int | None:
        """Accept ``tokens`` in order (see the module docstring); returns the stop index or None."""
        if self.finish_reason is not None:
            raise ValueError(f"advance after the generation finished ({self.finish_reason})")
        accepted: list[int] = []
        stop_at = None
        for i, token in enumerate(tokens):
            token = int(token)
            if token in self.stop_ids:
                self.finish_reason, stop_at = "stop", i
                break
            accepted.append(token)
            self.ids.append(token)
            self.uncertainty.append(uncertainty[i] if uncertainty is not None else _UNKNOWN)
            self.detok.push((token,))
            visible = self._visible(self.detok.text)
            check = self.stopper.check(visible)
            self._safe_marks.append(self.safe_len)
            self.safe_len = check.safe_len
            if check.stopped:
                at_newline = self.params.single_line and visible[check.safe_len :].startswith("\n")
                reason = "block_end" if check.block_end else "newline" if at_newline else "stop_string"
                self.finish_reason, stop_at = reason, i
                break
            if len(self.ids) >= self.params.max_new_tokens:
                self.finish_reason = "length"
                break
        if accepted:
            self.chain.advance(accepted)
            if self.rng is not None:
                self.rng.mark(len(accepted))
            self.logits = None
        if self.cache is not None and len(self.cache) > self.length:  # a verified draft ran past what was accepted
            self.cache.crop(self.length)
        return stop_at

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` accepted tokens in every part (cache, chain, detokenizer,
        stopper, generator, text), and any finish reason."""
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"rollback({n}) with {len(self.ids)} generated tokens")
        if n == 0:
            return
        del self.ids[len(self.ids) - n :]
        del self.uncertainty[len(self.uncertainty) - n :]
        self.detok.rollback(n)
        self.chain.rollback(n)
        self.stopper.rollback(n)
        if self.rng is not None:
            self.rng.rollback(n)
        self.safe_len = self._safe_marks[len(self._safe_marks) - n]
        del self._safe_marks[len(self._safe_marks) - n :]
        self.shown = min(self.shown, self.safe_len)
        self.finish_reason = None
        if self.cache is not None and len(self.cache) >= self.length:  # the logits after the end are gone:
            self.cache.crop(self.length - 1)  # feed its last token again
        self.logits = None

    def fork(self, cache: bool = True) -> DecodeState:
        """An independent copy: advancing or rolling back either leaves the other unchanged.
        ``cache=False``: a branch for bookkeeping only (processors, text, stops) whose tokens'
        keys and values live elsewhere — in a tree the strategy grows in this state's cache; it
        advances and rolls back like any state but cannot ``feed``."""
        other = DecodeState.__new__(DecodeState)
        other.__dict__.update(self.__dict__)
        other.cache = self.cache.fork() if cache else None
        other.logits = None if not cache else self.logits
        other.chain = self.chain.fork()
        other.detok = self.detok.fork()
        other.stopper = self.stopper.fork()
        other.rng = self.rng.fork() if self.rng is not None else None
        other.ids = list(self.ids)
        other.uncertainty = list(self.uncertainty)
        other._safe_marks = list(self._safe_marks)
        return other

    def reset(self) -> None:
        """Back to no generated tokens: every part rolled back to where it started."""
        self.rollback(len(self.ids))
        self.finish_reason = "length" if self.params.max_new_tokens == 0 else None

    # ---- model --------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Tokens of prompt + generation."""
        return len(self.prompt_ids) + len(self.ids)

    def unfed(self) -> list[int]:
        """The tokens of prompt + generation the cache does not hold yet."""
        n, p = len(self.cache), len(self.prompt_ids)
        return self.prompt_ids[n:] + self.ids if n < p else self.ids[n - p :]

    def feed(self, should_stop: Callable[[], str | None] | None = None,
             deadline: float | None = None) -> torch.Tensor:
        """The next-token logits [V], running the forwards the cache is missing (a chunked
        prefill; ``should_stop`` is asked between chunks, ``forward.Interrupted`` on a stop;
        chunks shrink toward ``deadline``, see ``forward.prefill``)."""
        if self.cache is None:
            raise ValueError("a branch forked without a cache cannot run the model")
        if self.logits is None:
            self.logits = prefill(self.model, self.cache, self.unfed(), should_stop=should_stop, deadline=deadline)
        return self.logits
