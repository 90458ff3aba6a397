"""The completion service shared by every frontend: documents, KV caches, one engine worker thread.

What it is (DESIGN §1, between the frontends and the engine):

1. ``ServerSettings``: the typed settings of a server, parsed once from the client's options
   (``initializationOptions`` / ``workspace/didChangeConfiguration`` / CLI flags).
2. ``DocumentStore``: open documents by URI — text, version, language — with edits applied in
   order (offsets in Python characters; the LSP frontend converts its positions).
3. ``CompletionService``: a queue and ONE worker thread that owns the engine (the engine is not
   thread-safe). Requests carry a ``threading.Event``; the engine checks it between decode steps,
   so a cancelled request stops within one step. A new request for the same document cancels the
   previous one (supersede). Each document key has its own ``KVCache`` (LRU-bounded), so
   consecutive requests in one document re-encode only what changed. Text deltas stream through a
   callback on the worker thread. An exception while generating becomes an empty result with
   ``finish_reason == "error"`` and a log line; a cancelled request is not an error.

What it is not: a protocol. URIs are opaque keys here, and nothing below this module sees them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from codedec.decoding import parse_decoding
from codedec.presets import DEFAULT_MODEL

log = logging.getLogger(__name__)

LINE_MODES = ("auto", "single", "multi")

# Client option names (camelCase, as VS Code settings spell them) -> field names.
_ALIASES = {
    "maxTokens": "max_tokens",
    "debounceMs": "debounce_ms",
    "timeBudgetMs": "time_budget_ms",
    "enabledLanguages": "languages",
    "enabled_languages": "languages",
    "lineMode": "line_mode",
    "maxPromptTokens": "max_prompt_tokens",
    "telemetryPath": "telemetry_path",
}


@dataclass(frozen=True)
class ServerSettings:
    """What a server does for every request; read by the frontends, never mutated (use ``updated``).

    ``languages``: language ids to complete in (empty = all). ``line_mode``: ``auto`` decides single
    or multi-line from the cursor context, ``single``/``multi`` force one. ``time_budget_ms``:
    wall-clock budget per completion (None = none). ``telemetry_path``: JSONL log of accept/reject
    events (None = the default under the codedec cache, ``""`` = off).
    """

    model: str = DEFAULT_MODEL
    decoding: tuple[str, ...] = ()
    max_tokens: int = 64
    debounce_ms: int = 0
    time_budget_ms: float | None = 2000.0
    languages: tuple[str, ...] = ()
    line_mode: str = "auto"
    heal: bool = True
    pie: bool = True
    max_prompt_tokens: int | None = None
    telemetry_path: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.debounce_ms < 0:
            raise ValueError(f"debounce_ms must be >= 0, got {self.debounce_ms}")
        if self.time_budget_ms is not None and self.time_budget_ms <= 0:
            raise ValueError(f"time_budget_ms must be > 0 (or null for none), got {self.time_budget_ms}")
        if self.line_mode not in LINE_MODES:
            raise ValueError(f"line_mode must be one of {LINE_MODES}, got {self.line_mode!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 16:
            raise ValueError(f"max_prompt_tokens must be >= 16, got {self.max_prompt_tokens}")
        if not self.model:
            raise ValueError("model must be a non-empty preset name or path")

    def language_enabled(self, language_id: str) -> bool:
        return not self.languages or language_id in self.languages

    def updated(self, options: Mapping[str, Any] | None) -> ServerSettings:
        """These settings with ``options`` applied (see ``from_options``)."""
        return ServerSettings.from_options(options, base=self)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any] | None, base: ServerSettings | None = None
    ) -> ServerSettings:
        """Parse client options into settings, starting from ``base`` (default: the defaults).

        Accepts snake_case or camelCase keys, flat or nested under ``"codedec"`` (the shape
        ``didChangeConfiguration`` sends). Unknown keys are logged and ignored; a known key with a
        bad value raises ``ValueError`` naming the key and the value.
        """
        base = base or cls()
        if not options:
            return base
        if not isinstance(options, Mapping):
            raise ValueError(f"settings must be an object, got {type(options).__name__}: {options!r}")
        if isinstance(options.get("codedec"), Mapping):
            options = options["codedec"]
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in options.items():
            name = _ALIASES.get(key, key)
            if name not in known:
                log.warning("ignoring unknown setting %r", key)
                continue
            try:
                changes[name] = _coerce(name, value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"setting {key!r}: {err} (got {value!r})") from None
        return replace(base, **changes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoding"] = list(self.decoding)
        d["languages"] = list(self.languages)
        return d


def _coerce(name: str, value: Any) -> Any:
    """One option value -> the field's type (strict: ``"12"`` is not an int)."""
    if name == "decoding":
        return parse_decoding(value if value is not None else ())
    if name == "languages":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of language ids")
        return tuple(v.strip() for v in value)
    if name in ("max_tokens", "debounce_ms", "max_prompt_tokens"):
        if value is None and name == "max_prompt_tokens":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise TypeError("expected an integer")
        return int(value)
    if name == "time_budget_ms":
        if value is None or value == 0:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("expected a number of milliseconds")
        return float(value)
    if name in ("heal", "pie"):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if name in ("model", "line_mode"):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if name == "telemetry_path":
        if value is not None and not isinstance(value, str):
            raise TypeError("expected a path or null")
        return value
    raise AssertionError(name)  # every field is handled above


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


class DocumentStore:
    """Open documents by URI. Thread-safe (the LSP and websocket frontends may share one)."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}
        self._lock = threading.Lock()

    def open(self, uri: str, text: str, version: int = 0, language: str = "") -> Document:
        with self._lock:
            doc = self._docs[uri] = Document(uri, text, version, language)
            return doc

    def get(self, uri: str) -> Document | None:
        with self._lock:
            return self._docs.get(uri)

    def close(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri, None)

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
                text = text[: e.start] + e.text + text[e.end :]
            doc.text = text
            doc.version = version
            return doc

    def __len__(self) -> int:
        return len(self._docs)


# --------------------------------------------------------------------------- requests


@dataclass
class CompletionRequest:
    """One completion: the text around the cursor and how to generate.

    ``doc`` keys the KV cache and supersede (one active request per key); ``path`` names the file
    for decoding components that read code (``None`` when unknown). ``on_delta(delta, text)``
    is called on the worker thread with each new piece and the text so far.
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
    seed: int | None = None
    max_prompt_tokens: int | None = None
    path: str | None = None
    on_delta: Callable[[str, str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)

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
        )
        base.update(kw)
        return cls(**base)


@dataclass
class CompletionResult:
    """``finish_reason``: the engine's (``stop``, ``length``, ``newline``, ``time``...), or
    ``cancelled`` (superseded, cancelled before or while running) or ``error`` (``error`` says why;
    ``text`` is then empty). ``stats``: timings in ms (``queue_ms``, ``prompt_ms``, ``ttft_ms``,
    ``first_text_ms`` — engine time to the first visible text —, ``total_ms``, ``service_ms``) and
    token counts."""

    id: str | int
    text: str
    finish_reason: str
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"


_STOP = object()


class CompletionService:
    """Documents + a request queue + one engine worker thread (see the module docstring).

    Pass a ready ``engine`` or a ``loader`` (called once, on the worker thread, so a slow model
    load never blocks the caller; requests submitted meanwhile wait in the queue).
    ``max_cached_documents`` bounds the per-document KV caches (least recently used go first).
    ``warmup``: after a ``loader`` load, and before ``ready`` is set, one 4-token completion with
    these decoding components runs (first-call costs — torch kernels, the grammar's vocabulary
    tables — then stay out of the user's first request); ``None`` skips it. ``monitor`` is left
    out: its language server starts per workspace, on first use.
    """

    def __init__(
        self,
        engine: Any = None,
        *,
        loader: Callable[[], Any] | None = None,
        max_cached_documents: int = 4,
        warmup: tuple[str, ...] | None = None,
    ) -> None:
        if (engine is None) == (loader is None):
            raise ValueError("give exactly one of engine= or loader=")
        self.documents = DocumentStore()
        self.engine = engine
        self.load_error: str | None = None
        self.ready = threading.Event()
        self._loader = loader
        self._warmup = warmup
        self.warmup_ms: float | None = None
        self._max_cached = max(1, max_cached_documents)
        self._caches: OrderedDict[str, Any] = OrderedDict()
        self._active: dict[str, CompletionRequest] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
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
            self._queue.put((request, fut))
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
            self._caches.pop(doc, None)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded (or failed to load: see ``load_error``)."""
        return self.ready.wait(timeout)

    def cached_documents(self) -> list[str]:
        with self._lock:
            return list(self._caches)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything, stop the worker and wait for it (at most ``timeout`` seconds)."""
        with self._lock:
            self._closed = True
            for req in self._active.values():
                req.cancel.set()
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- worker side

    def _run(self) -> None:
        if self._loader is not None:
            try:
                self.engine = self._loader()
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
            if not fut.set_running_or_notify_cancel():
                self._release(request)
                continue
            fut.set_result(self._serve(request))
        # Resolve whatever is still queued so nobody waits forever.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and job[1].set_running_or_notify_cancel():
                job[1].set_result(CompletionResult(job[0].id, "", "cancelled"))

    def _warm(self, decoding: tuple[str, ...]) -> None:
        """One short completion on a scratch document (its cache is dropped); never fails."""
        t0 = time.perf_counter()
        doc = "\0codedec-warmup"
        request = CompletionRequest(id="warmup", doc=doc, prefix="def add(a, b):\n    return", suffix="\n",
                                    max_tokens=4, decoding=tuple(d for d in decoding if d != "monitor"))
        result = self._serve(request)
        with self._lock:
            self._caches.pop(doc, None)
        self.warmup_ms = (time.perf_counter() - t0) * 1000.0
        if result.error is not None:
            log.warning("warm-up completion failed (requests will still be served): %s", result.error)
        else:
            log.info("warm-up completion in %.0f ms", self.warmup_ms)

    def _release(self, request: CompletionRequest) -> None:
        with self._lock:
            if self._active.get(request.doc) is request:
                del self._active[request.doc]

    def _serve(self, request: CompletionRequest) -> CompletionResult:
        started = time.perf_counter()
        queue_ms = (started - request.submitted) * 1000.0
        try:
            if request.cancel.is_set():
                return CompletionResult(request.id, "", "cancelled", stats={"queue_ms": queue_ms})
            if self.engine is None:
                return CompletionResult(request.id, "", "error", error=self.load_error or "no model loaded")
            return self._generate(request, queue_ms)
        except Exception as err:
            log.exception("completion %s failed", request.id)
            return CompletionResult(request.id, "", "error", error=f"{type(err).__name__}: {err}")
        finally:
            self._release(request)

    def _cache_for(self, doc: str) -> Any:
        with self._lock:
            cache = self._caches.get(doc)
            if cache is None:
                cache = self._caches[doc] = self.engine.new_cache()
                while len(self._caches) > self._max_cached:
                    self._caches.popitem(last=False)
            self._caches.move_to_end(doc)
            return cache

    def _generate(self, request: CompletionRequest, queue_ms: float) -> CompletionResult:
        from codedec.complete import text_context
        from codedec.context.fim import build_prompt
        from codedec.sampling import SamplingParams

        engine = self.engine
        t0 = time.perf_counter()
        prompt = build_prompt(
            engine.loaded.preset,
            engine.tokenizer,
            request.prefix,
            request.suffix,
            max_tokens=request.max_prompt_tokens,
            heal=request.heal,
        )
        params = SamplingParams(
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            seed=request.seed,
            single_line=request.single_line,
            max_time_ms=request.time_budget_ms,
        )
        prompt_ms = (time.perf_counter() - t0) * 1000.0
        text = ""
        first_text_ms: float | None = None
        last = None
        cache = self._cache_for(request.doc)
        for step in engine.generate(
            prompt.ids,
            params,
            decoding=request.decoding,
            heal_text=prompt.heal_text,
            cancel=request.cancel,
            cache=cache,
            edit_aware=request.pie,
            text_context=text_context(prompt.heal_text, request.prefix, request.suffix, request.path, params),
        ):
            last = step
            if not step.text:
                continue
            text += step.text
            if first_text_ms is None:
                first_text_ms = step.elapsed_ms
            if request.on_delta is not None:
                try:
                    request.on_delta(step.text, text)
                except Exception:  # a frontend callback must not end the generation
                    log.exception("on_delta callback of %s failed", request.id)
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
            "prefill_ms": m.prefill_ms,
            "ttft_ms": m.ttft_ms,
            "first_text_ms": first_text_ms,
            "total_ms": m.total_ms,
            "ms_per_token": m.ms_per_token,
            "service_ms": (time.perf_counter() - request.submitted) * 1000.0,
        }
        stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
        return CompletionResult(request.id, text, last.finish_reason, stats=stats)
