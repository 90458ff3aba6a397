"""The codedec language server (pygls 2): inline completion and completion over a CompletionService.

Protocol only (DESIGN §1): documents, settings, streaming and cancellation live in
``codedec.service`` (which also cleans the text, ``codedec.postprocess``); when and how much to
complete in ``codedec.heuristics``; typed-ahead reuse in ``result_cache``. What this module adds:

- incremental document sync into the service's ``DocumentStore`` (positions converted in the
  negotiated encoding); a change cancels the document's running request (its context is stale);
- ``textDocument/inlineCompletion`` (advertised with ``InlineCompletionOptions``) and
  ``textDocument/completion`` (the generated text as one item, for clients without inline
  completion), both streaming ``codedec/partial`` notifications ``{id, uri, text}`` while the
  engine runs; ``$/cancelRequest`` sets the request's cancel event (the engine stops within one
  step) and the client gets the standard RequestCancelled error;
- ``codedec/accept`` / ``codedec/reject`` notifications, logged to the telemetry JSONL; each inline
  item carries the command ``codedec.accepted`` with ``{id, uri, tokens, total_ms}`` (a client that
  runs item commands on accept, as VS Code does, turns it into ``codedec/accept``);
- ``codedec/status`` notifications ``{state: loading|ready|error, model, message}`` while the model
  loads and when it is ready (or failed);
- settings parsed once from ``initializationOptions`` and ``workspace/didChangeConfiguration``;
- the model loading on the service's worker thread, reported with ``window/workDoneProgress`` and on
  stderr; the event loop keeps answering didChange, cancel and shutdown meanwhile.

Error boundary: every handler converts an unexpected exception into an empty result plus a
``window/logMessage``; the server never crashes on a request. A cancelled request is not an error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from lsprotocol import types
from pygls import uris
from pygls.exceptions import FeatureRequestError, JsonRpcException, JsonRpcMethodNotFound
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from codedec import __version__
from codedec.heuristics import NONE, SINGLE, decide_mode, word_before
from codedec.service import CompletionRequest, CompletionService, ServerSettings, TextEdit
from codedec.text import for_model
from lsp_server.framing import (
    DEFAULT_MAX_BYTES,
    MAX_HEADER_LINE,
    Framing,
    StdinReader,
    StreamReaderAdapter,
    read_frames,
)
from lsp_server.positions import UTF16, offset_at, units
from lsp_server.result_cache import ResultCache
from lsp_server.telemetry import TelemetryLog, resolve_path

log = logging.getLogger(__name__)

PARTIAL = "codedec/partial"
ACCEPT = "codedec/accept"
REJECT = "codedec/reject"
STATUS = "codedec/status"
OPEN_WAIT_S = 2.0  # how long a completion request for an unknown document waits for its didOpen
ACCEPTED_COMMAND = "codedec.accepted"  # client-side command on each inline item (VS Code runs it on accept)


def _plain(obj: Any) -> Any:
    """pygls hands unknown-method params over as namedtuples: back to plain JSON values."""
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def default_loader(model: str, progress: Callable[[str], None]) -> Callable[[], Any]:
    """A loader for ``CompletionService``: loads ``model`` and builds the engine (on the worker)."""

    def load():
        from codedec.engine import Engine
        from codedec.loading import load_model

        return Engine(load_model(model, progress=progress))

    return load


class Completed(NamedTuple):
    """``complete_at``'s answer: the text to show (``""``: nothing), the prefix and the line mode
    it was made for, and for a model answer its ``tokens`` and ``total_ms``."""

    text: str
    prefix: str
    mode: str
    stats: dict[str, Any] | None = None


class _Protocol(LanguageServerProtocol):
    """pygls' protocol, except that a request whose params do not deserialize gets an error
    response (pygls only logs it, and the client would wait forever)."""

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as err:
            if isinstance(data, dict) and "id" in data and "method" in data:
                self._send_response(data["id"], error=types.ResponseError(
                    code=err.code, message=f"codedec: invalid params for {data['method']}: {err.message}"))
            raise


class CodedecServer(LanguageServer):
    """pygls server state: settings, the service, the typed-ahead cache and the telemetry log.

    ``service``: a ready service to use (tests, ``--ws`` sharing one); otherwise one is created at
    ``initialize`` with ``loader_factory(model, progress)`` so ``initializationOptions.model`` can
    choose the model.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        service: CompletionService | None = None,
        loader_factory: Callable[[str, Callable[[str], None]], Callable[[], Any]] = default_loader,
    ) -> None:
        super().__init__(
            "codedec", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=_Protocol,
        )
        self.settings = settings or ServerSettings()
        self.service = service
        self.loader_factory = loader_factory
        self.results = ResultCache()
        self.telemetry = TelemetryLog(resolve_path(self.settings.telemetry_path))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._generation: dict[str, int] = {}
        self._wakers: dict[str, asyncio.Event] = {}  # the request debouncing per document
        self._opening: dict[str, asyncio.Event] = {}  # requests waiting for their document's didOpen
        self._load_messages: list[str] = []
        self._load_t0 = time.perf_counter()
        self.max_message_bytes = DEFAULT_MAX_BYTES
        self.framing: Framing | None = None

    # ---- transport: our strict reader instead of pygls' (lsp_server.framing)

    def _deliver(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method is not None and method != "$/cancelRequest":
            try:
                self.protocol._get_handler(method)
            except JsonRpcMethodNotFound:
                if "id" in msg:
                    assert self.framing is not None
                    self.framing.reject(msg["id"], JsonRpcMethodNotFound.CODE, f"unknown method {method!r}")
                elif not method.startswith("$/"):
                    log.info("ignored notification for unknown method %r", method)
                return
        self.protocol.handle_message(self.protocol.structure_message(msg))

    def _framing(self) -> Framing:
        self.framing = Framing(self.protocol._send_data, self.max_message_bytes)
        return self.framing

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """LSP over stdio until the stream ends or ``exit``."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        framing = self._framing()

        async def serve() -> None:
            reader = StdinReader(stdin or sys.stdin.buffer, asyncio.get_running_loop(), self.thread_pool)
            await read_frames(self._stop_event, reader, framing, self._deliver)

        try:
            asyncio.run(serve())
        except BrokenPipeError:
            log.error("the client closed the connection; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        """LSP over TCP: one client connection at a time, as pygls does."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await read_frames(stop, StreamReaderAdapter(reader), self._framing(), self._deliver)
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port, limit=MAX_HEADER_LINE)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except asyncio.CancelledError:
            pass

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls' out-of-band errors (a notification handler failed, a bad message): a log line and
        a ``window/logMessage``, not pygls' ``Error in server`` popup."""
        log.warning("server error (%s): %s", getattr(source, "__name__", source), error)
        if source is not FeatureRequestError:  # a request's error is in its response already
            self.client_log(types.MessageType.Warning, f"{type(error).__name__}: {error}")

    # ---- helpers (event-loop thread unless said otherwise)

    @property
    def encoding(self) -> str:
        try:
            enc = self.workspace.position_encoding
        except RuntimeError:
            return UTF16
        return str(getattr(enc, "value", enc) or UTF16)

    def client_log(self, level: types.MessageType, message: str) -> None:
        log.log({1: logging.ERROR, 2: logging.WARNING}.get(level.value, logging.INFO), "%s", message)
        try:
            self.window_log_message(types.LogMessageParams(type=level, message=f"codedec: {message}"))
        except Exception:  # no transport (shutting down): the log line above is enough
            log.debug("could not send window/logMessage", exc_info=True)

    def post(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (callable from any thread)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def apply_settings(self, options: Any, where: str) -> None:
        try:
            new = self.settings.updated(_plain(options))
        except ValueError as err:
            self.client_log(types.MessageType.Warning, f"{where}: {err}; keeping the previous settings")
            return
        if new.telemetry_path != self.settings.telemetry_path:
            self.telemetry = TelemetryLog(resolve_path(new.telemetry_path))
        if self.service is not None and new.model != self.settings.model:
            self.client_log(types.MessageType.Info, f"model {new.model!r} takes effect after a restart")
        self.settings = new

    def on_load_progress(self, message: str) -> None:
        """Loader progress (worker thread): stderr now, the client's progress bar via the loop."""
        print(f"codedec: {message}", file=sys.stderr, flush=True)
        self._load_messages.append(message)

    def ensure_service(self) -> CompletionService:
        if self.service is None:
            model = self.settings.model
            self._load_t0 = time.perf_counter()
            self.on_load_progress(f"loading model {model}")
            self.service = CompletionService(loader=self.loader_factory(model, self.on_load_progress),
                                             warmup=self.settings.decoding)
        return self.service

    async def report_loading(self) -> None:
        """Show the model load as work-done progress until the service is ready."""
        service = self.ensure_service()
        token: str | None = None
        window = self.client_capabilities.window
        if window is not None and window.work_done_progress:
            token = f"codedec-load-{uuid.uuid4().hex[:8]}"
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), 5.0)
                self.work_done_progress.begin(
                    token,
                    types.WorkDoneProgressBegin(title="codedec", message=f"loading {self.settings.model}"),
                )
            except Exception:
                log.debug("client refused work-done progress", exc_info=True)
                token = None
        shown = 0
        self.notify_status("loading", f"loading {self.settings.model}")
        while not service.ready.is_set():
            await asyncio.sleep(0.05)
            if len(self._load_messages) > shown:
                if token:
                    self.work_done_progress.report(
                        token, types.WorkDoneProgressReport(message=self._load_messages[-1])
                    )
                self.notify_status("loading", self._load_messages[-1])
            shown = len(self._load_messages)
        secs = time.perf_counter() - self._load_t0
        done = f"model ready in {secs:.1f} s" if service.load_error is None else service.load_error
        self.notify_status("ready" if service.load_error is None else "error", done)
        print(f"codedec: {done}", file=sys.stderr, flush=True)
        if token:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=done))
        if service.load_error is not None:
            self.client_log(types.MessageType.Error, service.load_error)
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=f"codedec: {done}")
            )

    def notify_status(self, state: str, message: str) -> None:
        """``codedec/status`` ``{state: loading|ready|error, model, message}`` for status displays."""
        try:
            self.protocol.notify(STATUS, {"state": state, "model": self.settings.model, "message": message})
        except Exception:  # no transport (shutting down)
            log.debug("status notification not sent", exc_info=True)

    # ---- completion

    async def wait_open(self, uri: str) -> Any:
        """The document ``uri`` once its ``didOpen`` arrives, or None after ``OPEN_WAIT_S``. A client
        that starts the server while the user types (VS Code's language client) can send the first
        completion request before the ``didOpen`` of a document that was already open."""
        event = self._opening.setdefault(uri, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), OPEN_WAIT_S)
        except TimeoutError:
            pass
        finally:
            if self._opening.get(uri) is event and not event.is_set():
                del self._opening[uri]
        return self.ensure_service().documents.get(uri)

    async def complete_at(self, uri: str, position: types.Position, kind: str) -> Completed:
        """What to show for the cursor at ``position`` in ``uri`` (text ``""`` when there is
        nothing to show). Raises ``CancelledError`` when the client cancels the request."""
        t0 = time.perf_counter()
        msg_id = self.protocol.msg_id
        doc = self.ensure_service().documents.get(uri)
        if doc is None:
            doc = await self.wait_open(uri)
        if doc is None:
            self.client_log(
                types.MessageType.Warning, f"completion requested for a document that is not open: {uri}"
            )
            return Completed("", "", NONE)
        s = self.settings
        offset = offset_at(doc.text, position.line, position.character, self.encoding)
        prefix, suffix = for_model(doc.text[:offset]), for_model(doc.text[offset:])
        if not s.language_enabled(doc.language):
            return Completed("", prefix, NONE)
        mode = decide_mode(prefix, suffix, s.line_mode)
        if mode == NONE:
            return Completed("", prefix, mode)
        hit = self.results.get(prefix, suffix)
        logged = functools.partial(self._log_completion, t0, msg_id, uri, doc.language, kind, mode)
        if hit is not None:
            logged("cache", hit)
            return Completed(hit, prefix, mode)
        gen = self.supersede(uri)
        if s.debounce_ms:
            waker = self._wakers[uri] = asyncio.Event()
            try:
                await asyncio.wait_for(waker.wait(), s.debounce_ms / 1000.0)
            except TimeoutError:
                pass
            if self._generation.get(uri) != gen:
                return Completed("", prefix, mode)  # a newer request or an edit came meanwhile
        first_partial: list[float] = []

        def on_delta(delta: str, text: str) -> None:  # worker thread
            if not first_partial:
                first_partial.append((time.perf_counter() - t0) * 1000.0)
            self.post(self.protocol.notify, PARTIAL, {"id": msg_id, "uri": uri, "text": text})

        request = CompletionRequest.from_settings(
            s,
            id=msg_id,
            doc=uri,
            prefix=prefix,
            suffix=suffix,
            single_line=mode == SINGLE,
            path=uris.to_fs_path(uri) if uri.startswith("file:") else None,
            on_delta=on_delta,
        )
        fut = self.service.submit(request)
        try:
            result = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            request.cancel.set()
            raise
        if result.error is not None:
            self.client_log(types.MessageType.Warning, f"completion failed: {result.error}")
            return Completed("", prefix, mode)
        text = "" if result.cancelled else result.text  # post-processed by the service
        if text:
            self.results.put(prefix, suffix, text)
        logged(
            "model",
            text,
            first_partial_ms=round(first_partial[0], 3) if first_partial else None,
            ttft_ms=result.stats.get("ttft_ms"),
            first_text_ms=result.stats.get("first_text_ms"),
            prompt_ms=result.stats.get("prompt_ms"),
            queue_ms=result.stats.get("queue_ms"),
            reused_tokens=result.stats.get("reused_tokens"),
            prompt_tokens=result.stats.get("prompt_tokens"),
            new_tokens=result.stats.get("new_tokens"),
            forwards=result.stats.get("forwards"),
            total_ms=result.stats.get("total_ms"),
            strategy=result.stats.get("strategy"),
            finish_reason=result.finish_reason,
            **({"strategy_stats": result.stats["strategy_stats"]} if result.stats.get("strategy_stats") else {}),
            **({"constraints": result.stats["constraints"]} if result.stats.get("constraints") else {}),
            **({"context": result.stats["context"]} if result.stats.get("context") else {}),
            **_uncertainty_fields(result.stats),
        )
        return Completed(text, prefix, mode,
                         {"tokens": result.stats.get("new_tokens"), "total_ms": result.stats.get("total_ms")})

    def supersede(self, uri: str) -> int:
        """A new request or an edit for ``uri``: the request still debouncing there (if any) wakes
        up and gives up at once. Returns the new generation number."""
        gen = self._generation[uri] = self._generation.get(uri, 0) + 1
        waker = self._wakers.pop(uri, None)
        if waker is not None:
            waker.set()
        return gen

    def _log_completion(self, t0: float, msg_id: Any, uri: str, language: str, kind: str, mode: str,
                        source: str, text: str, **extra: Any) -> None:
        """One ``completion`` telemetry event: the request, where the text came from (``cache`` or
        ``model``), its length, the latency since ``t0`` (perf_counter seconds) and ``extra``."""
        self.telemetry.write(
            "completion", id=msg_id, uri=uri, language=language, kind=kind, mode=mode, source=source,
            chars=len(text), latency_ms=round((time.perf_counter() - t0) * 1000.0, 3), **extra,
        )


def _guard(empty: Callable[[], Any]):
    """Error boundary for a handler: an exception -> ``empty()`` + window/logMessage (a cancelled
    request still propagates: pygls answers it with RequestCancelled)."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(ls: CodedecServer, params):
            try:
                return await fn(ls, params)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("%s failed", fn.__name__)
                ls.client_log(types.MessageType.Error, f"{fn.__name__} failed: {type(err).__name__}: {err}")
                return empty()

        return handler

    return wrap


def _empty_inline() -> types.InlineCompletionList:
    return types.InlineCompletionList(items=[])


def _empty_completion() -> types.CompletionList:
    return types.CompletionList(is_incomplete=True, items=[])


def register_features(server: CodedecServer) -> CodedecServer:
    """Attach every handler to ``server`` (features are per instance in pygls)."""

    @server.feature(types.INITIALIZE)
    @_guard(lambda: None)
    async def initialize(ls: CodedecServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.apply_settings(params.initialization_options, "initializationOptions")
        ls.ensure_service()

    @server.feature(types.INITIALIZED)
    @_guard(lambda: None)
    async def initialized(ls: CodedecServer, params: types.InitializedParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.loop.create_task(ls.report_loading())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    @_guard(lambda: None)
    async def did_change_configuration(ls: CodedecServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings, "didChangeConfiguration")

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @_guard(lambda: None)
    async def did_open(ls: CodedecServer, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        ls.ensure_service().documents.open(d.uri, d.text, d.version, d.language_id,
                                           path=uris.to_fs_path(d.uri) if d.uri.startswith("file:") else None)
        waiting = ls._opening.pop(d.uri, None)
        if waiting is not None:
            waiting.set()
        if "monitor" in ls.settings.decoding and d.language_id == "python" and d.uri.startswith("file:"):
            from codedec.processors.monitor import warm_language_server

            warm_language_server(uris.to_fs_path(d.uri))  # warm by the first `obj.`

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    @_guard(lambda: None)
    async def did_change(ls: CodedecServer, params: types.DidChangeTextDocumentParams) -> None:
        service = ls.ensure_service()
        uri = params.text_document.uri
        service.cancel_document(uri)  # its context is stale; so is a request still debouncing:
        ls.supersede(uri)
        doc = service.documents.get(uri)
        if doc is None:
            ls.client_log(types.MessageType.Warning, f"didChange for a document that is not open: {uri}")
            return
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                start = offset_at(doc.text, r.start.line, r.start.character, ls.encoding)
                end = offset_at(doc.text, r.end.line, r.end.character, ls.encoding)
                doc = service.documents.change(
                    uri, params.text_document.version, [TextEdit(start, end, change.text)]
                )
            else:
                doc = service.documents.change(
                    uri, params.text_document.version, [TextEdit(0, len(doc.text), change.text)]
                )

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    @_guard(lambda: None)
    async def did_close(ls: CodedecServer, params: types.DidCloseTextDocumentParams) -> None:
        service = ls.ensure_service()
        service.documents.close(params.text_document.uri)
        service.forget_document(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    @_guard(_empty_inline)
    async def inline_completion(
        ls: CodedecServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        msg_id = ls.protocol.msg_id
        uri = params.text_document.uri
        done = await ls.complete_at(uri, params.position, "inline")
        text = done.text
        if not text:
            return _empty_inline()
        pos = params.position
        # The item names its request: a client that runs the command on accept (VS Code) reports it.
        accepted = types.Command(title="codedec: accepted", command=ACCEPTED_COMMAND,
                                 arguments=[{"id": msg_id, "uri": uri, **(done.stats or {})}])
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=text, range=types.Range(start=pos, end=pos),
                                              command=accepted)]
        )

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=None))
    @_guard(_empty_completion)
    async def completion(ls: CodedecServer, params: types.CompletionParams) -> types.CompletionList:
        text, prefix, _, _ = await ls.complete_at(params.text_document.uri, params.position, "completion")
        if not text:
            return _empty_completion()
        # Replace the word being typed with word + completion, so client-side filtering keeps the item.
        word = word_before(prefix)
        pos = params.position
        start = types.Position(line=pos.line, character=pos.character - units(word, ls.encoding))
        full = word + text
        item = types.CompletionItem(
            label=full.split("\n", 1)[0][:80] or full.strip()[:80],
            kind=types.CompletionItemKind.Text,
            detail="codedec",
            documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=full),
            filter_text=full,
            sort_text="0",
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=types.Range(start=start, end=pos), new_text=full),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(ACCEPT)
    @_guard(lambda: None)
    async def accept(ls: CodedecServer, params: Any) -> None:
        ls.telemetry.write("accept", **_event_fields(params))

    @server.feature(REJECT)
    @_guard(lambda: None)
    async def reject(ls: CodedecServer, params: Any) -> None:
        ls.telemetry.write("reject", **_event_fields(params))

    @server.feature(types.SHUTDOWN)
    @_guard(lambda: None)
    async def shutdown(ls: CodedecServer, params: Any) -> None:
        if ls.service is not None:
            await asyncio.get_running_loop().run_in_executor(None, ls.service.close, 2.0)

    return server


def _uncertainty_fields(stats: dict[str, Any]) -> dict[str, Any]:
    """What the uncertainty rules did to a completion, for its telemetry event (``codedec stats``)."""
    out = {}
    if "first_token_prob" in stats:
        out["first_token_prob"] = stats["first_token_prob"]
    if stats.get("withheld"):
        out["withheld"] = True
    if stats.get("uncertainty_cut_chars"):
        out["cut_chars"] = stats["uncertainty_cut_chars"]
    return out


def _event_fields(params: Any) -> dict[str, Any]:
    fields = _plain(params)
    if not isinstance(fields, dict):
        fields = {"params": fields}
    fields.pop("ts", None)
    fields.pop("event", None)
    return fields


def create_server(
    settings: ServerSettings | None = None,
    *,
    service: CompletionService | None = None,
    loader_factory: Callable[[str, Callable[[str], None]], Callable[[], Any]] = default_loader,
) -> CodedecServer:
    """A configured server, ready for ``start_io()`` / ``start_tcp(host, port)``."""
    return register_features(CodedecServer(settings, service=service, loader_factory=loader_factory))
