"""The LSP base protocol, read strictly: bounded frames, resynchronisation, JSON-RPC errors.

Replaces pygls' reader loop (``pygls.io_.run_async``), which trusts the stream: a
``Content-Length: 10**12`` header makes it allocate (MemoryError, the server dies), a missing
or negative length makes it wait forever, a body that is not JSON or not a JSON-RPC message
gets no answer, and requests before ``initialize`` are served. Here:

* a header line is at most :data:`MAX_HEADER_LINE` bytes; ``Content-Length`` is matched
  case-insensitively; a header block without a valid length, or with a length over
  ``max_bytes``, is answered with an error (id ``null``) and the stream is resynchronised at
  the next line that carries a ``Content-Length`` header (what comes in between is skipped
  without being buffered);
* the body is answered per JSON-RPC 2.0 when it is not a message: ``-32700`` (not JSON, or
  nested too deep), ``-32600`` (not an object — LSP has no batches —, no ``"jsonrpc": "2.0"``,
  a bad ``method`` or ``id``), with the request's id when it has one;
* before ``initialize`` a request gets ``-32002`` (server not initialized) and a notification
  is dropped, except ``exit`` (as the specification says);
* everything else goes to pygls (unknown method ``-32601``, bad params ``-32602``).

Every rejected frame is one log line on stderr (``lsp_server.framing`` logger), never a popup
in the editor and never a crash.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_HEADER_LINE = 8192
DEFAULT_MAX_BYTES = 64 << 20  # a 5 MB file is far below; configurable with --max-message-mb
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*([+-]?\d+)[ \t]*\r?\n?$", re.IGNORECASE)
_LENGTH_ANYWHERE = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)

PARSE_ERROR, INVALID_REQUEST, SERVER_NOT_INITIALIZED = -32700, -32600, -32002


class AsyncLineReader(Protocol):
    def readline(self) -> Awaitable[bytes]: ...  # at most MAX_HEADER_LINE bytes, b"" at the end

    def readexactly(self, n: int) -> Awaitable[bytes]: ...


class Framing:
    """The state of one connection's stream: initialized yet? what to answer a bad frame."""

    def __init__(self, send: Callable[[dict[str, Any]], None], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.send = send
        self.max_bytes = max_bytes
        self.initialized = False
        self.rejected = 0

    def reject(self, msg_id: Any, code: int, message: str) -> None:
        """Log one line and answer with a JSON-RPC error (``msg_id`` None: ``"id": null``)."""
        self.rejected += 1
        log.warning("rejected LSP message (%d): %s", code, message)
        if not (isinstance(msg_id, str | int) and not isinstance(msg_id, bool)):
            msg_id = None
        try:
            self.send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": f"codedec: {message}"}})
        except Exception:  # the transport is gone: the log line is all we can do
            log.debug("could not send the error response", exc_info=True)

    def check(self, body: bytes) -> dict[str, Any] | None:
        """The body as a JSON-RPC message dict, or None after answering why it is not one."""
        try:
            msg = json.loads(body)
        except RecursionError:
            self.reject(None, PARSE_ERROR, "JSON nested too deeply")
            return None
        except (ValueError, UnicodeDecodeError) as err:
            self.reject(None, PARSE_ERROR, f"not JSON: {err}")
            return None
        if isinstance(msg, list):
            self.reject(None, INVALID_REQUEST, "batches are not part of LSP; send one message per frame")
            return None
        if not isinstance(msg, dict):
            self.reject(None, INVALID_REQUEST, f"expected a JSON object, got {type(msg).__name__}")
            return None
        msg_id = msg.get("id")
        if msg.get("jsonrpc") != "2.0":
            self.reject(msg_id, INVALID_REQUEST, 'missing or wrong "jsonrpc": "2.0"')
            return None
        if "id" in msg and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int | None)):
            self.reject(None, INVALID_REQUEST, f"an id must be a string or an integer, got {msg_id!r}")
            return None
        method = msg.get("method")
        if "method" in msg and not isinstance(method, str):
            self.reject(msg_id, INVALID_REQUEST, f"a method must be a string, got {method!r}")
            return None
        if method is None and "result" not in msg and "error" not in msg:
            self.reject(msg_id, INVALID_REQUEST, "neither a request, a notification nor a response")
            return None
        if method is not None and not self.initialized:
            if method == "initialize" and "id" in msg:
                self.initialized = True
            elif method == "exit":
                pass
            elif "id" in msg:
                self.reject(msg_id, SERVER_NOT_INITIALIZED, f"{method} before initialize")
                return None
            else:
                log.warning("dropped notification %s before initialize", method)
                return None
        return msg


async def read_frames(stop: threading.Event, reader: AsyncLineReader, framing: Framing,
                      deliver: Callable[[dict[str, Any]], None]) -> None:
    """Read frames until the stream ends or ``stop`` is set; ``deliver`` each valid message."""
    pending: bytes | None = None  # a header line found while skipping
    while not stop.is_set():
        length, seen_any = None, False
        bad: str | None = None
        while True:  # one header block
            line = pending if pending is not None else await reader.readline()
            pending = None
            if not line:
                return
            if not line.endswith(b"\n") and len(line) >= MAX_HEADER_LINE:
                bad = bad or f"header line over {MAX_HEADER_LINE} bytes"
                continue
            if line.strip() == b"":
                if seen_any:
                    break
                continue  # blank lines between frames
            found = _LENGTH_ANYWHERE.search(line)
            if found is not None and found.start() > 0:  # bytes outside a frame, then a header
                framing.reject(None, PARSE_ERROR, f"bytes outside a frame: {line[:min(found.start(), 80)]!r}")
                pending = line[found.start():]
                break
            seen_any = True
            match = _LENGTH.match(line)
            if match:
                value = int(match.group(1))
                if value < 0:
                    bad = f"negative Content-Length {value}"
                elif value > framing.max_bytes:
                    bad = f"Content-Length {value} over the maximum of {framing.max_bytes} bytes"
                else:
                    length = value
            elif b":" not in line:
                bad = bad or f"not a header line: {line[:80]!r}"
        if pending is not None:  # restart the header block at the header found in that line
            continue
        if bad is None and length is None:
            bad = "a header block without Content-Length"
        if bad is not None:
            framing.reject(None, INVALID_REQUEST if "maximum" in bad else PARSE_ERROR,
                           f"{bad}; skipping to the next Content-Length header")
            pending = await _resync(reader)
            continue
        body = await reader.readexactly(length) if length else b""
        if len(body) < (length or 0):
            return  # the stream ended inside a body
        msg = framing.check(body)
        if msg is not None:
            try:
                deliver(msg)
            except Exception as err:  # pygls answered a request already; never end the loop for one
                log.warning("LSP message %s not handled: %s: %s", msg.get("method") or msg.get("id"),
                            type(err).__name__, err)


async def _resync(reader: AsyncLineReader) -> bytes | None:
    """Skip lines (without keeping them) until one holds a ``Content-Length`` header; return
    that header as a line of its own, or None at the end of the stream."""
    while True:
        line = await reader.readline()
        if not line:
            return None
        found = _LENGTH_ANYWHERE.search(line)
        if found:
            return line[found.start():]


class StdinReader:
    """``AsyncLineReader`` over a binary stdin: bounded lines, reads on an executor thread."""

    def __init__(self, stdin: Any, loop: Any, executor: Any = None) -> None:
        self.stdin, self.loop, self.executor = stdin, loop, executor

    def readline(self) -> Awaitable[bytes]:
        return self.loop.run_in_executor(self.executor, self.stdin.readline, MAX_HEADER_LINE)

    async def readexactly(self, n: int) -> bytes:
        return await self.loop.run_in_executor(self.executor, _read_exactly, self.stdin, n)


def _read_exactly(stream: Any, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class StreamReaderAdapter:
    """``AsyncLineReader`` over an ``asyncio.StreamReader`` (LSP over TCP)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    async def readline(self) -> bytes:
        import asyncio

        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            return err.partial
        except asyncio.LimitOverrunError as err:  # no newline within the limit: hand over a piece
            return await self.reader.read(min(err.consumed or MAX_HEADER_LINE, MAX_HEADER_LINE))

    async def readexactly(self, n: int) -> bytes:
        import asyncio

        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as err:
            return err.partial
