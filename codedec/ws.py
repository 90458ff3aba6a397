"""Websocket API: streamed, cancellable completions for any client that can speak JSON.

Protocol (one JSON object per text message):

- client -> server ``{"type": "complete", "id": ID, "text": STR, "cursor": INT, "path": STR,
  "language": STR, "options": {...}}``: complete ``text`` at character offset ``cursor`` (Unicode
  code points, 0 <= cursor <= len(text)). ``id`` (string or integer) is the client's. ``path`` keys
  the KV cache and supersede: a new request for the same path cancels the previous one. Options
  (all optional): ``max_tokens``, ``single_line``, ``time_budget_ms``, ``decoding`` (list or
  ``"a,b"``), ``heal``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``strategy``,
  ``uncertainty_cut``, ``min_first_prob``, ``min_line_prob`` — the fields of
  ``codedec.settings.ServerSettings``, so the same knobs as the CLI and the LSP settings.
- server -> client ``{"type": "delta", "id": ID, "text": STR}`` for each new piece (raw, as
  generated), then exactly one ``{"type": "done", "id": ID, "text": FULL, "stats": {...}}`` — FULL
  post-processed as in the editors (``codedec.postprocess``), ``stats.raw_text`` as generated,
  ``stats.new_tokens`` / ``stats.forwards`` (model forward calls), ``stats.finish_reason``
  (``cancelled`` after a cancel) — or ``{"type": "error", "id": ID, "error": STR}``.
- client -> server ``{"type": "cancel", "id": ID}`` stops that request within one decode step
  (unknown ids are ignored: the request may just have finished).
- Fairness: requests are served round-robin by connection, and long prompts of different
  connections interleave chunk by chunk (``codedec.service``); one connection may have at most
  ``max_active`` (4) requests running or queued — more get an error.
- Malformed JSON, a non-object, an unknown ``type``, bad fields or a message over
  ``max_message_bytes`` (1 MiB) get ``{"type": "error", "id": ID or null, "error": STR}``; the
  connection stays open. A message over 16 × ``max_message_bytes`` is not read at all: the
  connection is closed with code 1009 (message too big).

Security: binds 127.0.0.1 by default; a non-loopback bind needs a token, which clients present as
``Authorization: Bearer TOKEN`` (scheme in any case) or ``?token=TOKEN`` (otherwise HTTP 401 at
the handshake). A handshake with an ``Origin`` header — a web page in a browser: any page the user
visits could otherwise drive the loopback API (cross-site WebSocket hijacking) — gets HTTP 403
unless the origin is in ``allowed_origins`` (``--ws-allow-origin``); editors and scripts send none.

What it is not: an editor. Nothing here decides single vs multi-line for the client
(``single_line`` says it; a multi-line completion ends where the cursor's block ends).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from codedec.service import CompletionRequest, CompletionService, ServerSettings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_MESSAGE_BYTES = 1 << 20
MAX_ACTIVE_PER_CONNECTION = 4  # requests of one connection running or queued at once
_OPTION_FIELDS = {"max_tokens", "time_budget_ms", "decoding", "heal", "temperature", "top_k", "top_p", "seed",
                  "strategy", "uncertainty_cut", "min_first_prob", "min_line_prob"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Raise ``ValueError`` for a non-loopback bind without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"the websocket API would listen on {host!r}, reachable from other machines: "
            "give --ws-token TOKEN (clients send 'Authorization: Bearer TOKEN') or bind 127.0.0.1"
        )


def parse_hostport(spec: str, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); raises ``ValueError``."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = "", spec
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT, got {spec!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range in {spec!r}")
    return host, number


class _BadRequest(Exception):
    pass


def _check_id(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadRequest(f"'id' must be a string or an integer, got {value!r}")
    return value


class WebsocketAPI:
    """Serves the protocol in the module docstring over a ``CompletionService``."""

    def __init__(
        self,
        service: CompletionService,
        settings: ServerSettings | None = None,
        *,
        token: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        allowed_origins: Sequence[str] = (),
        max_active: int = MAX_ACTIVE_PER_CONNECTION,
    ) -> None:
        self.service = service
        self.settings = settings or ServerSettings()
        self.token = token or None
        self.max_message_bytes = max_message_bytes
        self.allowed_origins = tuple(allowed_origins)
        self.max_active = max(1, max_active)
        self._conn_ids = itertools.count(1)

    # ---- handshake

    def authorize(self, connection: ServerConnection, request: Any) -> Any:
        """``process_request`` hook: 403 for a browser origin not allowed, 401 unless the configured
        token is presented."""
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.allowed_origins:
            log.warning("websocket handshake from origin %r refused (allow it with --ws-allow-origin)", origin)
            return connection.respond(HTTPStatus.FORBIDDEN, f"codedec: origin {origin!r} not allowed\n")
        if self.token is None:
            return None
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        supplied = value.strip() if scheme.lower() == "bearer" else ""
        if not supplied:
            supplied = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        if hmac.compare_digest(supplied.encode(), self.token.encode()):
            return None
        return connection.respond(HTTPStatus.UNAUTHORIZED, "codedec: missing or wrong token\n")

    # ---- messages

    async def handle(self, ws: ServerConnection) -> None:
        """One connection: read messages until it closes; cancel what is left running."""
        conn = next(self._conn_ids)
        active: dict[str | int, CompletionRequest] = {}
        tasks: set[asyncio.Task] = set()
        try:
            async for raw in ws:
                reply = self._dispatch(ws, conn, raw, active, tasks)
                if reply is not None:
                    await self._send(ws, reply)
        except ConnectionClosed:
            pass
        finally:
            for request in active.values():
                request.cancel.set()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, ws, conn: int, raw: str | bytes, active: dict, tasks: set) -> dict | None:
        """Handle one message; returns an error reply or None."""
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8"))
        if size > self.max_message_bytes:
            return _error(None, f"message too large: {size} bytes (limit {self.max_message_bytes})")
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            return _error(None, f"malformed JSON: {err}")
        if not isinstance(msg, dict):
            return _error(None, f"expected a JSON object, got {type(msg).__name__}")
        kind = msg.get("type")
        raw_id = msg.get("id")
        try:
            if kind == "complete":
                self._start(ws, conn, msg, active, tasks)
            elif kind == "cancel":
                request = active.get(_check_id(raw_id))
                if request is not None:
                    request.cancel.set()
            else:
                return _error(raw_id, f"unknown message type {kind!r}; expected 'complete' or 'cancel'")
        except _BadRequest as err:
            return _error(raw_id, str(err))
        return None

    def _start(self, ws, conn: int, msg: dict, active: dict, tasks: set) -> None:
        req_id = _check_id(msg.get("id"))
        if req_id in active:
            raise _BadRequest(f"request {req_id!r} is still running; use a new id")
        text, cursor = msg.get("text"), msg.get("cursor")
        if not isinstance(text, str):
            raise _BadRequest("'text' must be a string")
        if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(text):
            raise _BadRequest(f"'cursor' must be an integer offset in 0..{len(text)}, got {cursor!r}")
        path = msg.get("path") or ""
        if not isinstance(path, str):
            raise _BadRequest("'path' must be a string")
        options = msg.get("options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("'options' must be an object")
        unknown = set(options) - _OPTION_FIELDS - {"single_line"}
        if unknown:
            raise _BadRequest(f"unknown option(s) {sorted(unknown)}")
        try:
            settings = self.settings.updated({k: v for k, v in options.items() if k in _OPTION_FIELDS})
        except ValueError as err:
            raise _BadRequest(str(err)) from None
        single_line = options.get("single_line", False)
        if not isinstance(single_line, bool):
            raise _BadRequest("'single_line' must be true or false")
        doc = f"ws:{path}" if path else f"ws:connection-{conn}"
        running = [r for r in active.values() if not r.cancel.is_set() and r.doc != doc]  # same doc: superseded
        if len(running) >= self.max_active:
            raise _BadRequest(f"{len(running)} requests of this connection are still running (limit "
                              f"{self.max_active}); wait for one to finish or cancel one")

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        request = CompletionRequest.from_settings(
            settings,
            id=req_id,
            doc=doc,
            client=f"ws:connection-{conn}",
            prefix=text[:cursor],
            suffix=text[cursor:],
            path=path or None,
            single_line=single_line,
            on_delta=lambda delta, _text: loop.call_soon_threadsafe(queue.put_nowait, delta),
        )
        active[req_id] = request
        task = loop.create_task(self._run(ws, request, queue, active))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self, ws, request: CompletionRequest, queue: asyncio.Queue, active: dict) -> None:
        fut = asyncio.wrap_future(self.service.submit(request))
        fut.add_done_callback(lambda _: queue.put_nowait(None))  # after every delta (FIFO on the loop)
        try:
            while (delta := await queue.get()) is not None:
                await self._send(ws, {"type": "delta", "id": request.id, "text": delta})
            result = fut.result()
        finally:
            active.pop(request.id, None)
        if result.error is not None:
            log.warning("websocket completion %r failed: %s", request.id, result.error)
            await self._send(ws, _error(request.id, result.error))
        else:
            stats = dict(result.stats, finish_reason=result.finish_reason, raw_text=result.raw_text)
            await self._send(ws, {"type": "done", "id": request.id, "text": result.text, "stats": stats})

    @staticmethod
    async def _send(ws, message: dict) -> None:
        try:
            await ws.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed:
            pass

    # ---- serving

    @asynccontextmanager
    async def running(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> AsyncIterator[Server]:
        """Listen on ``host:port`` (port 0 picks a free one: read ``server.sockets``) while inside."""
        check_bind(host, self.token)
        async with serve(
            self.handle,
            host,
            port,
            process_request=self.authorize,
            max_size=max(16 * self.max_message_bytes, 1 << 20),  # we answer oversized ones ourselves
        ) as server:
            yield server

    async def serve_forever(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        on_ready: Callable[[str, int], None] | None = None,
    ) -> None:
        async with self.running(host, port) as server:
            bound = server.sockets[0].getsockname()
            log.info("websocket API on ws://%s:%s", bound[0], bound[1])
            if on_ready is not None:
                on_ready(bound[0], bound[1])
            await server.serve_forever()


def _error(req_id: Any, message: str) -> dict:
    return {
        "type": "error",
        "id": req_id if isinstance(req_id, str | int) and not isinstance(req_id, bool) else None,
        "error": message,
    }


def start_in_thread(
    api: WebsocketAPI, host: str, port: int, on_ready: Callable[[str, int], None] | None = None
) -> threading.Thread:
    """Run ``api`` on its own event loop in a daemon thread (next to an LSP server on the main one)."""
    check_bind(host, api.token)

    def run() -> None:
        try:
            asyncio.run(api.serve_forever(host, port, on_ready))
        except Exception:
            log.exception("the websocket API stopped")

    thread = threading.Thread(target=run, name="codedec-ws", daemon=True)
    thread.start()
    return thread
