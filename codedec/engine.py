"""The token-level engine: ``Engine.generate(prompt_ids, params, processors, strategy) -> Iterator[Step]``.

What it is: the request loop over one model and its KV caches (gpt-fast / nanochat style). Per
request it (1) picks the session's cache, (2) reuses its longest cached prefix of the prompt (or
patches it across an edit, PIE), (3) builds a ``DecodeState`` and prefills the rest in chunks,
(4) calls ``strategy.step(state)`` until the state finishes, yielding a ``Step`` per strategy step
with the text it completes. The engine speaks token ids only: the caller hands it a ready
processor chain (grammar, monitor, healing...) and the sampling parameters; it never sees files,
cursors or editors (DESIGN §1).

Sessions: ``session`` is an opaque key (the service uses one per document); each key has its own
KV cache, least recently used ones are dropped beyond ``max_sessions``. ``None`` is the default
session.

What it is not: thread-safe. One engine serves one generation at a time; the server runs it on a
worker thread and cancels through ``cancel`` (a ``threading.Event``), checked between steps and
between prefill chunks, so a cancelled generation stops within one step or one chunk. A generator
that is closed or abandoned mid-way leaves the cache consistent (every forward is recorded whole).

Finish reasons: ``stop`` (a stop id), ``stop_string``, ``newline`` (single-line mode),
``block_end`` (a line left the cursor's block, ``SamplingParams.block_indent``), ``length``,
``time`` (``max_time_ms`` spent), ``cancelled``, ``preempted`` (``generate(preempt=...)``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from codedec.cache import KVCache
from codedec.forward import Interrupted
from codedec.metrics import RequestMetrics
from codedec.pie import apply_edit
from codedec.processors import LogitsProcessor, ProcessorChain
from codedec.sampling import SamplingParams
from codedec.state import DecodeState
from codedec.strategy import PlainStrategy, Strategy
from codedec.vocab import vocab_for

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One step of a generation.

    ``token_ids``: ids accepted in this step (empty only on the final step); ``text``: the
    completion text they make final (may be ``""`` while a character or a possible stop string is
    held back). ``index``: how many tokens were generated before this step. ``finish_reason`` is
    set on the last step only, which also carries the final metrics. ``metrics`` is the request's
    running ``RequestMetrics`` (same object every step). ``uncertainty``: per token of
    ``token_ids``, (entropy in nats, probability of the token) under the processed distribution
    it was chosen from (nan when the strategy did not say).
    """

    token_ids: list[int]
    text: str
    index: int
    elapsed_ms: float
    metrics: RequestMetrics
    finish_reason: str | None = None
    uncertainty: list[tuple[float, float]] = field(default_factory=list)  # per token: (entropy, probability)


class Engine:
    """Generates token ids for prompts with one model and per-session reusable KV caches.

    ``loaded`` is a ``codedec.loading.LoadedModel`` (model, tokenizer, preset, stop ids).
    Implements ``codedec.backend.CompletionBackend``.
    """

    def __init__(self, loaded, max_sessions: int = 4) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.preset = loaded.preset
        self.name = getattr(loaded, "name", "model")
        self.vocab = vocab_for(loaded.tokenizer)
        self.stop_ids = tuple(loaded.stop_token_ids)
        self.cache = KVCache(self.model.config)  # the default session's
        self.max_sessions = max(1, max_sessions)
        self._sessions: OrderedDict[Hashable, KVCache] = OrderedDict()
        self._sessions_lock = threading.Lock()  # frontends list/drop sessions from other threads
        self._busy = threading.Lock()

    # ---- sessions

    def session_cache(self, session: Hashable | None) -> KVCache:
        """The cache of ``session`` (created on first use; None = the default cache)."""
        if session is None:
            return self.cache
        with self._sessions_lock:
            cache = self._sessions.get(session)
            if cache is None:
                cache = self._sessions[session] = KVCache(self.model.config)
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(session)
            return cache

    def sessions(self) -> list[Hashable]:
        """Session keys with a cache, least recently used first."""
        with self._sessions_lock:
            return list(self._sessions)

    def drop_session(self, session: Hashable) -> None:
        """Forget a session's cache (its document was closed). Unknown keys are ignored; a
        generation running in it keeps its cache until it ends."""
        with self._sessions_lock:
            self._sessions.pop(session, None)

    # ---- generation

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        processors: ProcessorChain | Sequence[LogitsProcessor] = (),
        strategy: Strategy | None = None,
        *,
        session: Hashable | None = None,
        cancel: threading.Event | None = None,
        edit_aware: bool = False,
        cache: KVCache | None = None,
        preempt: Callable[[], bool] | None = None,
    ) -> Iterator[Step]:
        """Stream the completion of ``prompt_ids`` (see the module docstring for the loop).

        ``preempt()`` is asked between prefill chunks (after at least one chunk of this call):
        True ends the generation with finish reason ``preempted`` and the chunks encoded so far
        kept in the session's cache, so the same prompt generated again later resumes where it
        stopped (the service interleaves long prefills of different documents this way).

        ``processors``: a ready chain (or list) applied at every step, in order. ``strategy``:
        default ``PlainStrategy``. ``edit_aware`` reuses the cache across a mid-prompt edit (PIE,
        ``codedec.pie``): the tokens after the edit keep their keys/values, re-rotated to their
        new positions, instead of being re-encoded. ``cache`` overrides the session's cache
        (benchmarks compare caches side by side). Raises ``ValueError`` for an empty prompt.
        """
        if len(prompt_ids) == 0:
            raise ValueError("the prompt is empty: at least one token id is needed")
        params = params or SamplingParams()
        chain = processors if isinstance(processors, ProcessorChain) else ProcessorChain(list(processors))
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this engine is already generating; one generation at a time")
        try:
            cache = cache if cache is not None else self.session_cache(session)
            yield from self._loop(list(prompt_ids), params, chain, strategy or PlainStrategy(), cancel, cache,
                                  edit_aware, preempt)
        finally:
            self._busy.release()

    def _loop(self, prompt_ids: list[int], params: SamplingParams, chain: ProcessorChain, strategy: Strategy,
              cancel: threading.Event | None, cache: KVCache, edit_aware: bool,
              preempt: Callable[[], bool] | None = None) -> Iterator[Step]:
        t0 = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - t0) * 1000.0

        def should_stop() -> str | None:  # asked between prefill chunks and between steps
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if params.max_time_ms is not None and elapsed() >= params.max_time_ms:
                return "time"
            return None

        def should_pause() -> str | None:  # between prefill chunks: also yield to other work
            reason = should_stop()
            if reason is None and preempt is not None and preempt():
                return "preempted"
            return reason

        metrics = RequestMetrics(prompt_tokens=len(prompt_ids), strategy=strategy.name)
        forwards0 = cache.forwards
        finish: str | None = None
        state = None
        try:
            edited = 0
            if edit_aware and len(cache):
                edit = apply_edit(self.model, cache, prompt_ids, self.preset, should_stop=should_pause)
                edited = edit.encoded
                metrics.edit_encoded, metrics.edit_rotated = edit.encoded, edit.rotated
                metrics.edit_fallback = edit.fallback_reason
            kept = cache.reuse(prompt_ids)  # cached positions, the edited span included
            metrics.reused_tokens = kept - edited
            state = DecodeState(self.model, cache, prompt_ids, params, chain, self.vocab, self.stop_ids)
            deadline = None if params.max_time_ms is None else t0 + params.max_time_ms / 1000.0
            state.feed(should_pause, deadline)
        except Interrupted as stop:
            finish = stop.reason
        except BaseException:
            cache.reset()  # a forward that failed half-way leaves layers of unequal length
            raise
        metrics.prefill_ms = elapsed()

        while finish is None and state.finish_reason is None:
            reason = should_stop()
            if reason == "cancelled" or (reason == "time" and state.ids):  # at least one token in time
                finish = reason
                break
            before = len(state.ids)
            try:
                strategy.step(state)
            except BaseException:
                cache.reset()
                raise
            if before == 0:
                metrics.ttft_ms = elapsed()
            new = state.ids[before:]
            metrics.new_tokens = len(state.ids)
            metrics.forwards = cache.forwards - forwards0
            metrics.total_ms = elapsed()
            if cancel is not None and cancel.is_set():  # cancelled during the step's forward:
                finish = "cancelled"  # nothing more reaches the caller
                break
            if new:
                yield Step(new, state.take_text(), before, metrics.total_ms, metrics,
                           uncertainty=state.uncertainty[before:])

        finish = finish or state.finish_reason
        # A cancelled request sends nothing more (its held-back text included: nobody waits for it).
        tail = state.take_tail() if state is not None and finish != "cancelled" else ""
        metrics.forwards = cache.forwards - forwards0
        metrics.total_ms = elapsed()
        log.debug("generate: %s", metrics.as_dict())
        yield Step([], tail, len(state.ids) if state is not None else 0, metrics.total_ms, metrics,
                   finish_reason=finish)
