"""The token-level engine: ``Engine.generate(prompt_ids, params) -> Iterator[Step]``.

What it is: the decode loop (gpt-fast / nanochat style) over one model and one KV cache. Per
request it (1) reuses the longest cached prefix of the prompt, (2) prefills the rest, (3) repeats
processors -> sample -> stop checks -> detokenize -> decode_one, yielding a ``Step`` per token
with the text it completes. Text is produced by the incremental detokenizer; the engine never sees
files, cursors or editors (DESIGN §1).

What it is not: thread-safe. One engine serves one generation at a time; the server runs it on a
worker thread and cancels through ``cancel`` (a ``threading.Event``), checked between steps, so a
cancelled generation stops within one decode step. A generator that is closed or abandoned
mid-way leaves the cache consistent (every forward is recorded whole).

Finish reasons: ``stop`` (a stop id), ``stop_string``, ``newline`` (single-line mode), ``length``,
``time`` (``max_time_ms`` spent), ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from codedec.cache import KVCache
from codedec.decoding import ComponentContext, TextContext, build_processors
from codedec.detokenize import IncrementalDetokenizer
from codedec.forward import decode_one, prefill
from codedec.metrics import RequestMetrics
from codedec.processors import HealingProcessor, LogitsProcessor, ProcessorChain
from codedec.sampling import SamplingParams, make_generator, sample
from codedec.stopping import TextStopper
from codedec.vocab import vocab_for

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One step of a generation.

    ``token_ids``: ids accepted in this step (empty only on the final step); ``text``: the
    completion text they make final (may be ``""`` while a character or a possible stop string is
    held back). ``finish_reason`` is set on the last step only, which also carries the final
    metrics. ``metrics`` is the request's running ``RequestMetrics`` (same object every step).
    """

    token_ids: list[int]
    text: str
    index: int
    elapsed_ms: float
    metrics: RequestMetrics
    finish_reason: str | None = None


class Engine:
    """Generates token ids for prompts with one model and a reusable KV cache.

    ``loaded`` is a ``codedec.loading.LoadedModel`` (model, tokenizer, preset, stop ids).
    """

    def __init__(self, loaded) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.vocab = vocab_for(loaded.tokenizer)
        self.stop_ids = tuple(loaded.stop_token_ids)
        self.cache = KVCache(self.model.config)
        self._busy = threading.Lock()

    def new_cache(self) -> KVCache:
        """An empty cache for this model (the server keeps one per document)."""
        return KVCache(self.model.config)

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        decoding: Sequence[str] = (),
        processors: Sequence[LogitsProcessor] = (),
        heal_text: str = "",
        cancel: threading.Event | None = None,
        cache: KVCache | None = None,
        text_context: TextContext | None = None,
        edit_aware: bool = False,
    ) -> Iterator[Step]:
        """Stream the completion of ``prompt_ids`` (see the module docstring for the loop).

        ``decoding`` names registry components (``codedec.decoding``), ``processors`` adds
        ready-made ones after them. ``heal_text`` is the text the prompt was backed up by (token
        healing): the first tokens are constrained to re-create it and it is not part of the
        completion text. ``text_context`` is the text around the cursor, for components that read
        code (grammar, monitor). ``edit_aware`` reuses the cache across a mid-prompt edit (PIE,
        ``codedec.pie``): the tokens after the edit keep their keys/values, re-rotated to their new
        positions, instead of being re-encoded. Raises ``ValueError`` for an empty prompt or
        unknown component names.
        """
        if len(prompt_ids) == 0:
            raise ValueError("the prompt is empty: at least one token id is needed")
        params = params or SamplingParams()
        chain = ProcessorChain(
            build_processors(
                decoding,
                ComponentContext(self.vocab, self.stop_ids, text_context or TextContext(), self.tokenizer),
            )
            + list(processors)
        )
        if heal_text:  # first: when masks disagree the chain drops a later one, never healing
            chain.processors.insert(0, HealingProcessor(self.vocab, heal_text.encode("utf-8")))
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this engine is already generating; one generation at a time")
        try:
            cache = cache if cache is not None else self.cache
            yield from self._loop(list(prompt_ids), params, chain, heal_text, cancel, cache, edit_aware)
        finally:
            self._busy.release()

    def _loop(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        chain: ProcessorChain,
        heal_text: str,
        cancel: threading.Event | None,
        cache: KVCache,
        edit_aware: bool,
    ) -> Iterator[Step]:
        t0 = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - t0) * 1000.0

        metrics = RequestMetrics(prompt_tokens=len(prompt_ids))
        stop_ids = set(self.stop_ids) | set(params.stop_token_ids)
        detok = IncrementalDetokenizer(self.vocab)
        stopper = TextStopper(params.stop_strings, params.single_line)
        generator = make_generator(params, self.model.device)
        deadline = params.max_time_ms

        try:
            edited = 0
            if edit_aware and len(cache):
                edit = cache.apply_edit(self.model, prompt_ids, self.loaded.preset)
                edited = edit.encoded
                metrics.edit_encoded, metrics.edit_rotated = edit.encoded, edit.rotated
                metrics.edit_fallback = edit.fallback_reason
            kept = cache.reuse(prompt_ids)  # cached positions, the edited span included
            metrics.reused_tokens = kept - edited
            logits = prefill(self.model, cache, prompt_ids[kept:])  # [V]
        except BaseException:
            cache.reset()  # a forward that failed half-way leaves layers of unequal length
            raise
        metrics.prefill_ms = elapsed()

        shown = 0  # characters of the visible completion already streamed
        finish = "length"
        index = 0
        for index in range(params.max_new_tokens):
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if deadline is not None and index > 0 and elapsed() >= deadline:
                finish = "time"
                break
            row = chain(logits.unsqueeze(0))  # [1, V]
            token = int(sample(row, params, generator)[0])
            if index == 0:
                metrics.ttft_ms = elapsed()
            if token in stop_ids:
                finish = "stop"
                break
            chain.advance([token])
            detok.push([token])
            metrics.new_tokens += 1
            full = detok.text
            visible = full[len(heal_text) :] if full.startswith(heal_text) else ""
            check = stopper.check(visible)
            delta = visible[shown : check.safe_len]
            shown = max(shown, check.safe_len)
            metrics.total_ms = elapsed()
            yield Step([token], delta, index, metrics.total_ms, metrics)
            if check.stopped:
                at_newline = params.single_line and visible[check.safe_len :].startswith("\n")
                finish = "newline" if at_newline else "stop_string"
                break
            if index + 1 < params.max_new_tokens:
                try:
                    logits = decode_one(self.model, cache, token)
                except BaseException:
                    cache.reset()
                    raise
        else:
            index = params.max_new_tokens

        tail = ""
        if finish not in ("stop_string", "newline"):
            detok.flush()
            full = detok.text
            visible = full[len(heal_text) :] if full.startswith(heal_text) else ""
            tail = visible[shown:]
        metrics.total_ms = elapsed()
        log.debug("generate: %s", metrics.as_dict())
        yield Step([], tail, index, metrics.total_ms, metrics, finish_reason=finish)
