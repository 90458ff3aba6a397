"""The completion service: the one pipeline of every frontend (CLI, eval, LSP, websocket).

What it is (DESIGN §1, between the frontends and the engine):

1. ``DocumentStore``: open documents by URI — text, version, language — with edits applied in
   order (offsets in Python characters; the LSP frontend converts its positions).
2. ``CompletionService``: a queue and ONE worker thread that owns the engine (the engine is not
   thread-safe). Fair under load: the queue serves clients round-robin (``request.client``,
   default the document), and while anything is waiting a running request yields between
   prefill chunks (``Engine.generate(preempt=...)``: its encoded chunks stay cached and it
   resumes on its next turn), so a short request never waits behind a long prompt's whole
   prefill. A request's time budget counts from its submission (queue included): its answer,
   possibly empty with the reason ``time``, comes within the budget plus one chunk or step.
   Each request goes the same way whatever the frontend: ``codedec.prepare`` (prompt
   assembly, processors from the text around the cursor, sampling knobs) -> the engine, under the
   request's document key as its session (per-document KV cache, PIE across edits) -> the editor
   post-processing (``codedec.postprocess.finalize``). Requests carry a ``threading.Event``; the
   engine checks it between decode steps and prefill chunks. A new request for the same document
   cancels the previous one (supersede). Text deltas (raw, as generated) stream through a
   callback on the worker thread; the result's ``text`` is the finalized one. An exception while
   generating becomes an empty result with ``finish_reason == "error"`` and a log line; a
   cancelled request is not an error.
3. ``complete``: one synchronous completion through the queue (the CLI and eval use it).

The service talks to the engine only through ``codedec.backend.CompletionBackend`` (token ids, an
opaque session key), so another backend can sit behind it. Settings: ``codedec.settings``.

What it is not: a protocol. URIs are opaque keys here, and nothing below this module sees them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from codedec.settings import LINE_MODES, ServerSettings
from codedec.text import lines_normalized, log_replaced, replace_surrogates
from codedec.threads import ThreadPolicy

__all__ = ["LINE_MODES", "CompletionRequest", "CompletionResult", "CompletionService", "DocumentStore",
           "ServerSettings", "TextEdit"]

log = logging.getLogger(__name__)

GATHER_MS = 50.0  # time for gathering cross-file context per request (the rest comes from caches later)

# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class TextEdit:
    """Replace ``text[start:end]`` (Python character offsets) with ``text``."""

    start: int
    end: int
    text: str


@dataclass
class Document:
    uri: str
    text: str
    version: int = 0
    language: str = ""
    path: str | None = None  # the file on disk, when the frontend knows it (a ``file:`` URI)


class DocumentStore:
    """Open documents by URI. Thread-safe (the LSP and websocket frontends may share one)."""

    def __init__(self, on_edit: Callable[[Document, int | None], None] | None = None) -> None:
        self._docs: dict[str, Document] = {}
        self._by_path: dict[str, str] = {}  # absolute path -> uri
        self._lock = threading.Lock()
        self._reported: set[str] = set()  # documents whose replaced surrogates were logged
        self._on_edit = on_edit

    def open(self, uri: str, text: str, version: int = 0, language: str = "", path: str | None = None) -> Document:
        """Store ``uri``'s text, lone surrogates replaced (``codedec.text``; positions keep).
        ``path``: its file on disk (cross-file context then reads this text, not the disk's)."""
        text = self._clean(uri, text)
        path = os.path.abspath(path) if path else None
        with self._lock:
            doc = self._docs[uri] = Document(uri, text, version, language, path)
            if path:
                self._by_path[path] = uri
        self._notify(doc, None)
        return doc

    def _notify(self, doc: Document, offset: int | None) -> None:
        if self._on_edit is not None and doc.path:
            try:
                self._on_edit(doc, offset)
            except Exception:  # noqa: BLE001 - context bookkeeping must never fail an edit
                log.exception("document listener failed for %s", doc.uri)

    def text_at(self, path: str) -> str | None:
        """The open document's text for the file ``path`` (None when it is not open)."""
        with self._lock:
            uri = self._by_path.get(path)
            doc = self._docs.get(uri) if uri is not None else None
            return doc.text if doc is not None else None

    def _clean(self, uri: str, text: str) -> str:
        text, n = replace_surrogates(text)
        log_replaced(uri, n, self._reported)
        return text

    def get(self, uri: str) -> Document | None:
        with self._lock:
            return self._docs.get(uri)

    def close(self, uri: str) -> None:
        with self._lock:
            doc = self._docs.pop(uri, None)
            if doc is not None and doc.path and self._by_path.get(doc.path) == uri:
                del self._by_path[doc.path]

    def change(self, uri: str, version: int, edits: Sequence[TextEdit]) -> Document:
        """Apply ``edits`` in order (each against the text the previous one produced).

        Raises ``ValueError`` for an unknown URI or an edit outside the text (the client and the
        server disagree about the document; the frontend logs it).
        """
        with self._lock:
            doc = self._docs.get(uri)
            if doc is None:
                raise ValueError(f"change for a document that is not open: {uri}")
            text = doc.text
            for e in edits:
                if not 0 <= e.start <= e.end <= len(text):
                    raise ValueError(f"edit {e.start}..{e.end} outside {uri} ({len(text)} characters)")
                text = text[: e.start] + self._clean(uri, e.text) + text[e.end :]
            doc.text = text
            doc.version = version
        if edits:
            self._notify(doc, edits[-1].start + len(edits[-1].text))
        return doc

    def __len__(self) -> int:
        return len(self._docs)


# --------------------------------------------------------------------------- requests


@dataclass
class CompletionRequest:
    """One completion: the text around the cursor and how to generate.

    ``doc`` keys the KV cache and supersede (one active request per key); ``path`` names the file
    for decoding components that read code (``None`` when unknown). ``single_line``: the frontend's
    decision (``codedec.heuristics.decide_mode``); a multi-line completion ends where the cursor's
    block ends. ``postprocess``: apply the editor post-processing to the final text.
    ``on_delta(delta, text)`` is called on the worker thread with each new (raw) piece and the raw
    text so far. ``client`` groups requests for fair scheduling (default: ``doc``; the websocket
    API uses its connection). ``prefix`` and ``suffix`` are stored as the model sees them (``codedec.text``:
    lone surrogates replaced, ``\\r\\n`` and ``\\r`` line ends as ``\\n``); ``replaced``: how many
    surrogates that replaced. ``context``: how cross-file context is fitted (``none``: in-file
    only, the default for a bare request; ``ServerSettings`` defaults to ``truncate``) within
    ``context_tokens``; ``context_chunks`` (``ContextChunk``): context the client supplies (the
    service gathers it from the workspace of ``path`` when there is none); ``repo_name`` and
    ``current_path`` (the file's name as shown; default: from ``path``): shown to the model with it.
    """

    id: str | int
    doc: str
    prefix: str
    suffix: str = ""
    single_line: bool = False
    max_tokens: int = 64
    time_budget_ms: float | None = None
    decoding: tuple[str, ...] = ()
    heal: bool = True
    pie: bool = True
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    strategy: str = "plain"
    uncertainty_cut: float | None = None
    min_first_prob: float | None = None
    min_line_prob: float | None = None
    context: str = "none"
    context_tokens: int | None = None
    context_chunks: tuple = ()
    repo_name: str = ""
    current_path: str = ""
    stop_strings: tuple[str, ...] = ()
    postprocess: bool = True
    max_prompt_tokens: int | None = None
    path: str | None = None
    on_delta: Callable[[str, str], None] | None = None
    client: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    replaced: int = field(default=0, init=False)
    started: float | None = field(default=None, init=False)  # first time the worker took it
    preemptions: int = field(default=0, init=False)

    @property
    def queue_key(self) -> str:
        """Whose turn this request waits for in the round-robin queue."""
        return self.client or self.doc

    def __post_init__(self) -> None:
        self.prefix, n_prefix = replace_surrogates(self.prefix)
        self.suffix, n_suffix = replace_surrogates(self.suffix)
        self.replaced = n_prefix + n_suffix
        self.prefix, self.suffix = lines_normalized(self.prefix), lines_normalized(self.suffix)

    @classmethod
    def from_settings(cls, settings: ServerSettings, **kw: Any) -> CompletionRequest:
        """A request with the generation knobs of ``settings``; ``kw`` sets the rest (and may
        override any of them)."""
        base = dict(
            max_tokens=settings.max_tokens,
            time_budget_ms=settings.time_budget_ms,
            decoding=settings.decoding,
            heal=settings.heal,
            pie=settings.pie,
            max_prompt_tokens=settings.max_prompt_tokens,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            seed=settings.seed,
            strategy=settings.strategy,
            uncertainty_cut=settings.uncertainty_cut,
            min_first_prob=settings.min_first_prob,
            min_line_prob=settings.min_line_prob,
            context=settings.context,
            context_tokens=settings.context_tokens,
        )
        base.update(kw)
        return cls(**base)


@dataclass
class CompletionResult:
    """``text``: the completion to show (post-processed unless the request said not to);
    ``raw_text``: as generated. ``finish_reason``: the engine's (``stop``, ``length``, ``newline``,
    ``block_end``, ``time``...), or ``cancelled`` (superseded, cancelled before or while running)
    or ``error`` (``error`` says why; ``text`` is then empty). ``stats``: timings in ms
    (``queue_ms``, ``prompt_ms``, ``ttft_ms``, ``first_text_ms`` — engine time to the first visible
    text —, ``total_ms``, ``service_ms``), token counts (``new_tokens``, ``forwards``: model
    forward calls) and the prompt's ``prompt_mode``/``heal_text``."""

    id: str | int
    text: str
    finish_reason: str
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    raw_text: str = ""
    token_ids: list[int] = field(default_factory=list)
    uncertainty: list[tuple[float, float]] = field(default_factory=list)  # per token: (entropy nats, prob)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"


class _Scheduler:
    """Pending jobs, served round-robin by client (thread-safe): one client with many requests,
    or one with a long prompt, does not make the others wait behind all of them."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queues: OrderedDict[str, deque] = OrderedDict()
        self._stopped = False

    def put(self, client: str, job: Any) -> None:
        with self._cv:
            self._queues.setdefault(client, deque()).append(job)
            self._cv.notify()

    def get(self) -> Any:
        """The next job (blocking), or ``_STOP`` once ``stop`` was called and nothing is left."""
        with self._cv:
            while not self._queues and not self._stopped:
                self._cv.wait()
            if not self._queues:
                return _STOP
            client, jobs = next(iter(self._queues.items()))
            job = jobs.popleft()
            del self._queues[client]
            if jobs:  # the client's next job goes to the back of the rotation
                self._queues[client] = jobs
            return job

    def waiting(self) -> int:
        with self._cv:
            return sum(map(len, self._queues.values()))

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()


_STOP = object()


class CompletionService:
    """Documents + a request queue + one engine worker thread (see the module docstring).

    Pass a ready ``engine`` or a ``loader`` (called once, on the worker thread, so a slow model
    load never blocks the caller; requests submitted meanwhile wait in the queue).
    ``max_cached_documents`` bounds the per-document KV caches (the engine's sessions; least
    recently used go first).
    ``warmup``: after a ``loader`` load, and before ``ready`` is set, one 4-token completion with
    these decoding components runs (first-call costs — torch kernels, the grammar's vocabulary
    tables — then stay out of the user's first request); ``None`` skips it. ``monitor`` is left
    out: its language server starts per workspace, on first use. ``threads``: torch threads per
    request; ``None`` (default) adapts them to how busy the machine is (``codedec.threads``), unless
    the environment sets ``CODEDEC_THREADS`` (a fixed count; the tests do, for reproducible output).
    """

    def __init__(
        self,
        engine: Any = None,
        *,
        loader: Callable[[], Any] | None = None,
        max_cached_documents: int = 4,
        warmup: tuple[str, ...] | None = None,
        threads: int | None = None,
    ) -> None:
        if (engine is None) == (loader is None):
            raise ValueError("give exactly one of engine= or loader=")
        from codedec.context.repository import Repositories

        self.documents = DocumentStore(on_edit=self._note_edit)
        self.repositories = Repositories(self.documents.text_at)  # cross-file context per workspace
        self.engine = engine
        self.load_error: str | None = None
        self.ready = threading.Event()
        self._loader = loader
        self._warmup = warmup
        self.warmup_ms: float | None = None
        self._max_cached = max(1, max_cached_documents)
        if engine is not None:
            engine.max_sessions = self._max_cached
        self._active: dict[str, CompletionRequest] = {}
        self._lock = threading.Lock()
        self._queue = _Scheduler()
        if threads is None and os.environ.get("CODEDEC_THREADS", "").strip():
            threads = int(os.environ["CODEDEC_THREADS"])
        self._threads = ThreadPolicy() if threads is None else None
        self._fixed_threads = threads
        self._closed = False
        self._reported_docs: set[str] = set()  # documents whose replaced surrogates were logged
        self._previous: OrderedDict[str, Any] = OrderedDict()  # doc -> speculate.references.Previous
        self._spec_store: Any = None  # speculate.suffix_tree.GlobalStore, made on first use
        self._governor: Any = None  # speculate.verify.Governor, shared by the requests
        self._thread = threading.Thread(target=self._run, name="codedec-engine", daemon=True)
        self._thread.start()

    # ---- frontend side (any thread)

    def submit(self, request: CompletionRequest) -> Future[CompletionResult]:
        """Queue ``request``; the previous active request of the same document is cancelled.
        Returns a future resolved (never with an exception) when the request ends."""
        fut: Future[CompletionResult] = Future()
        with self._lock:
            if self._closed:
                fut.set_result(CompletionResult(request.id, "", "cancelled"))
                return fut
            prev = self._active.get(request.doc)
            if prev is not None and prev is not request:
                prev.cancel.set()
            self._active[request.doc] = request
            self._queue.put(request.queue_key, (request, fut))
        return fut

    def cancel_document(self, doc: str) -> None:
        """Cancel the active request of ``doc`` (if any): the user typed, its context is stale."""
        with self._lock:
            req = self._active.get(doc)
        if req is not None:
            req.cancel.set()

    def forget_document(self, doc: str) -> None:
        """Cancel its request and drop its KV cache (the document was closed)."""
        self.cancel_document(doc)
        with self._lock:
            self._previous.pop(doc, None)
        if self.engine is not None:
            self.engine.drop_session(doc)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded (or failed to load: see ``load_error``)."""
        return self.ready.wait(timeout)

    def cached_documents(self) -> list[str]:
        """Document keys whose KV cache the engine keeps, least recently used first."""
        return list(self.engine.sessions()) if self.engine is not None else []

    def complete(self, request: CompletionRequest, timeout: float | None = None) -> CompletionResult:
        """Submit ``request`` and wait for its result (the CLI and eval path)."""
        return self.submit(request).result(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything, stop the worker and wait for it (at most ``timeout`` seconds)."""
        with self._lock:
            self._closed = True
            for req in self._active.values():
                req.cancel.set()
        self._queue.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _note_edit(self, doc: Document, offset: int | None) -> None:
        """An opened (``offset`` None) or edited document: into its workspace's ring of recent chunks."""
        ctx = self.repositories.for_path(doc.path)
        if offset is None:
            ctx.note_open(doc.path, doc.text)
        else:
            ctx.note_edit(doc.path, doc.text, offset)

    # ---- worker side

    def _run(self) -> None:
        if self._loader is not None:
            try:
                self.engine = self._loader()
                self.engine.max_sessions = self._max_cached
            except BaseException as err:  # noqa: BLE001 - a failed load must not kill the worker
                self.load_error = f"the model could not be loaded: {err}"
                log.error("%s", self.load_error, exc_info=not isinstance(err, Exception) or None)
            if self.engine is not None and self._warmup is not None:
                self._warm(self._warmup)
        self.ready.set()
        while True:
            job = self._queue.get()
            if job is _STOP:
                break
            request, fut = job
            if request.started is None and not fut.set_running_or_notify_cancel():
                self._release(request)
                continue
            if self._closed:  # resolve what is still queued so nobody waits forever
                self._release(request)
                fut.set_result(CompletionResult(request.id, "", "cancelled"))
                continue
            result = self._serve(request)
            if result is None:  # preempted between prefill chunks: its turn comes again
                self._queue.put(request.queue_key, job)
                continue
            fut.set_result(result)

    def _warm(self, decoding: tuple[str, ...]) -> None:
        """One short completion on a scratch document (its cache is dropped); never fails."""
        t0 = time.perf_counter()
        doc = "\0codedec-warmup"
        request = CompletionRequest(id="warmup", doc=doc, prefix="def add(a, b):\n    return", suffix="\n",
                                    max_tokens=4, decoding=tuple(d for d in decoding if d != "monitor"))
        while (result := self._serve(request)) is None:  # preempted by a request queued meanwhile
            pass
        self.engine.drop_session(doc)
        self.warmup_ms = (time.perf_counter() - t0) * 1000.0
        if result.error is not None:
            log.warning("warm-up completion failed (requests will still be served): %s", result.error)
        else:
            log.info("warm-up completion in %.0f ms", self.warmup_ms)

    def _set_threads(self) -> int:
        """Apply the thread policy (or the fixed count) before a request; returns the count."""
        import torch

        want = self._fixed_threads or (self._threads.choose() if self._threads else torch.get_num_threads())
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
        return want

    @staticmethod
    def _budget_left(request: CompletionRequest) -> float | None:
        """The request's time budget minus the time since it was submitted — the user waits from
        the keystroke, queue included; a preempted request resumes with the rest. At least 1 ms,
        so a spent budget ends the request as ``time`` within one prefill chunk."""
        if request.time_budget_ms is None:
            return None
        spent = (time.perf_counter() - request.submitted) * 1000.0
        return max(1.0, request.time_budget_ms - spent)

    def _release(self, request: CompletionRequest) -> None:
        with self._lock:
            if self._active.get(request.doc) is request:
                del self._active[request.doc]

    def _serve(self, request: CompletionRequest) -> CompletionResult | None:
        """The request's result, or None when it was preempted (to be served again)."""
        if request.started is None:
            request.started = time.perf_counter()
        queue_ms = (request.started - request.submitted) * 1000.0
        done = True
        try:
            if request.cancel.is_set():
                return CompletionResult(request.id, "", "cancelled", stats={"queue_ms": queue_ms})
            if self.engine is None:
                return CompletionResult(request.id, "", "error", error=self.load_error or "no model loaded")
            left = self._budget_left(request)
            if left is not None and left <= 1.0:  # waited out its budget in the queue: answer now,
                return CompletionResult(request.id, "", "time",  # not after one more chunk of work
                                        stats={"queue_ms": queue_ms, "preemptions": request.preemptions})
            result = self._generate(request, queue_ms, left)
            done = result is not None
            return result
        except Exception as err:
            log.exception("completion %s failed", request.id)
            return CompletionResult(request.id, "", "error", error=f"{type(err).__name__}: {err}")
        finally:
            if done:
                self._release(request)

    def _uncertainty_rules(self, request: CompletionRequest, prepared, tokens: list[int],
                           uncertainty: list[tuple[float, float]], text: str, stats: dict) -> str:
        """The editor's uncertainty rules (``codedec.uncertainty``) on the generated ``text``:
        withhold when the first token or the first line is unlikely, cut a multi-line suggestion
        at the first uncertain line after its first. What they did goes into ``stats``."""
        from codedec.uncertainty import first_line_confidence

        if uncertainty and not math.isnan(uncertainty[0][1]):
            stats["first_token_prob"] = uncertainty[0][1]
        pieces = [self.engine.vocab.token_bytes[t] for t in tokens]
        line = first_line_confidence(pieces, uncertainty)
        if line is not None:
            stats["first_line_prob"] = line[0]
        shown, why = self._shown(request, prepared, tokens, uncertainty, text, pieces=pieces)
        if why == "withheld":
            stats["withheld"] = True
        elif why == "cut":
            stats["uncertainty_cut_chars"] = len(text) - len(shown)
        return shown

    def _shown(self, request: CompletionRequest, prepared, tokens: list[int],
               uncertainty: list[tuple[float, float]], text: str, final: bool = True,
               pieces: list[bytes] | None = None) -> tuple[str, str | None]:
        """(how much of the raw ``text`` so far the editor may show, why less: ``withheld``,
        ``cut`` or None). The final answer and every streamed partial (``final`` False) go
        through it, so the partials never show what the final answer takes back. ``pieces``:
        the tokens' bytes, when the caller has them already."""
        from codedec.uncertainty import apply_rules

        if request.uncertainty_cut is None and request.min_first_prob is None and request.min_line_prob is None:
            return text, None
        if pieces is None:
            table = self.engine.vocab.token_bytes
            pieces = [table[t] for t in tokens]
        return apply_rules(text, pieces, uncertainty, cut=request.uncertainty_cut,
                           min_prob=request.min_first_prob, single_line=request.single_line,
                           skip=prepared.heal_text, min_line_prob=request.min_line_prob, final=final)

    def _context_for(self, request: CompletionRequest) -> tuple[tuple, str, float]:
        """(cross-file chunks, the file's path as shown, ms spent gathering): the client's own
        chunks, else gathered from the workspace of ``request.path`` within ``GATHER_MS``."""
        from codedec.context.repository import ContextChunk

        current = request.current_path or (os.path.basename(request.path) if request.path else "")
        if request.context == "none":
            return (), current, 0.0
        if request.context_chunks:
            chunks = tuple(c if isinstance(c, ContextChunk) else ContextChunk(c["path"], c["text"], "given")
                           for c in request.context_chunks)
            return chunks, current, 0.0
        if not request.path:
            return (), current, 0.0
        t0 = time.perf_counter()
        try:
            repo = self.repositories.for_path(request.path)
            chunks = tuple(repo.gather(request.path, request.prefix, request.suffix, budget_ms=GATHER_MS))
            current = request.current_path or repo.workspace.display(request.path)
        except Exception:  # noqa: BLE001 - context is a bonus: never fail the completion over it
            log.exception("gathering cross-file context for %s failed", request.path)
            chunks = ()
        return chunks, current, (time.perf_counter() - t0) * 1000.0

    def _attach_speculation(self, strategy: Any, request: CompletionRequest, prepared: Any) -> None:
        """Give a speculative strategy the service's global index of earlier completions, its
        governor and the request's references: the text after the cursor (unless the prompt
        holds it), and after an edit the document's previous completion and the replaced text
        (``codedec.speculate.references``)."""
        from codedec.speculate.references import reference_ids
        from codedec.speculate.suffix_tree import GlobalStore
        from codedec.speculate.verify import Governor

        if self._spec_store is None:
            self._spec_store, self._governor = GlobalStore(), Governor()
        with self._lock:
            previous = self._previous.get(request.doc)
        refs = reference_ids(self.engine.tokenizer, request.prefix, request.suffix, previous,
                             with_suffix=prepared.prompt_mode == "prefix")
        strategy.attach(store=self._spec_store, governor=self._governor, references=refs)

    def _remember(self, request: CompletionRequest, prompt_ids: Sequence[int], tokens: list[int],
                  finish: str | None) -> None:
        """Keep a finished completion for speculation, after the tail of its prompt: the
        document's previous completion, and in the global index of earlier completions (once
        speculation is in use)."""
        from codedec.speculate.references import CONTEXT_IDS, Previous

        if finish == "cancelled" or not tokens:
            return
        context = tuple(prompt_ids[-CONTEXT_IDS:])
        with self._lock:
            self._previous[request.doc] = Previous(request.prefix, request.suffix, tuple(tokens), context)
            self._previous.move_to_end(request.doc)
            while len(self._previous) > 4 * self._max_cached:
                self._previous.popitem(last=False)
        if self._spec_store is not None:
            self._spec_store.add(context + tuple(tokens))

    def _generate(self, request: CompletionRequest, queue_ms: float,
                  budget_ms: float | None) -> CompletionResult | None:
        from codedec.postprocess import finalize
        from codedec.prepare import prepare
        from codedec.strategy import make_strategy

        engine = self.engine
        t0 = time.perf_counter()
        chunks, current, gather_ms = self._context_for(request)
        prepared = prepare(
            engine, request.prefix, request.suffix,
            max_tokens=request.max_tokens, single_line=request.single_line, stop_strings=request.stop_strings,
            decoding=request.decoding, heal=request.heal, temperature=request.temperature, top_k=request.top_k,
            top_p=request.top_p, seed=request.seed, time_budget_ms=budget_ms,
            max_prompt_tokens=request.max_prompt_tokens, path=request.path,
            context=request.context, context_chunks=chunks, context_tokens=request.context_tokens,
            current_path=current, repo_name=request.repo_name,
        )
        strategy = make_strategy(request.strategy, getattr(getattr(engine, "loaded", None), "source", None))
        if hasattr(strategy, "attach"):  # speculation: the shared index and governor, the request's references
            self._attach_speculation(strategy, request, prepared)
        threads = self._set_threads()
        prompt_ms = (time.perf_counter() - t0) * 1000.0
        text = ""
        tokens: list[int] = []
        uncertainty: list[tuple[float, float]] = []
        first_text_ms: float | None = None
        streamed = 0  # characters of the text already streamed (the editor's rules may hold some back)
        last = None
        for step in engine.generate(prepared.prompt_ids, prepared.params, prepared.chain, strategy,
                                    session=request.doc, cancel=request.cancel, edit_aware=request.pie,
                                    preempt=lambda: self._queue.waiting() > 0):
            if step.finish_reason == "preempted":
                request.preemptions += 1
                return None
            last = step
            tokens.extend(step.token_ids)
            uncertainty.extend(step.uncertainty)
            if not step.text:
                continue
            text += step.text
            if first_text_ms is None:
                first_text_ms = step.elapsed_ms
            if request.on_delta is not None:
                visible, _ = self._shown(request, prepared, tokens, uncertainty, text, final=False)
                if len(visible) > streamed:
                    try:
                        request.on_delta(visible[streamed:], visible)
                    except Exception:  # a frontend callback must not end the generation
                        log.exception("on_delta callback of %s failed", request.id)
                    streamed = len(visible)
        m = last.metrics
        stats = {
            "queue_ms": queue_ms,
            "prompt_ms": prompt_ms,
            "prompt_tokens": m.prompt_tokens,
            "reused_tokens": m.reused_tokens,
            "edit_encoded": m.edit_encoded,
            "edit_rotated": m.edit_rotated,
            "edit_fallback": m.edit_fallback,
            "new_tokens": m.new_tokens,
            "forwards": m.forwards,
            "strategy": m.strategy,
            "prefill_ms": m.prefill_ms,
            "ttft_ms": m.ttft_ms,
            "first_text_ms": first_text_ms,
            "total_ms": m.total_ms,
            "ms_per_token": m.ms_per_token,
            "prompt_mode": prepared.prompt_mode,
            "heal_text": prepared.heal_text,
            "service_ms": (time.perf_counter() - request.submitted) * 1000.0,
            "preemptions": request.preemptions,
            "threads": threads,
        }
        if prepared.context is not None:
            stats["context"] = {**prepared.context, "gather_ms": round(gather_ms, 3)}
        constraints = prepared.chain.reports()
        if constraints:
            stats["constraints"] = constraints
        if getattr(strategy, "stats", None):  # e.g. adadec: steps, pauses
            stats["strategy_stats"] = dict(strategy.stats)
        if request.replaced:
            stats["replaced_chars"] = request.replaced
            log_replaced(request.doc, request.replaced, self._reported_docs)
        self._remember(request, prepared.prompt_ids, tokens, last.finish_reason)
        shown = self._uncertainty_rules(request, prepared, tokens, uncertainty, text, stats)
        stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
        final = shown
        if request.postprocess and last.finish_reason != "cancelled":
            final = finalize(shown, request.prefix, request.suffix, "single" if request.single_line else "multi")
        return CompletionResult(request.id, final, last.finish_reason, stats=stats, raw_text=text, token_ids=tokens,
                                uncertainty=uncertainty)
