"""A language-server client for monitor-guided decoding: one server per workspace, kept warm.

What it is: ``MonitorClient`` drives a stdio language server (jedi-language-server by default,
any command configurable) with pygls 2's ``LanguageClient`` on a private asyncio loop in a daemon
thread, so the decode loop (synchronous, on its own thread) can ask for completions and wait at
most a budget:

1. ``start()`` launches the server, sends ``initialize``/``initialized`` (diagnostics and snippets
   off: a monitor only needs names), then warms it up with a member query on the stdlib so the
   first real query does not pay for jedi's imports;
2. ``request(path, text, offset)`` keeps one open document per path in sync — ``didOpen`` the
   first time, then incremental ``didChange`` with the single edited range — and asks for
   completions at ``offset``; it returns a ``concurrent.futures.Future`` of the completion
   labels that are identifiers (``[]`` on any error: a monitor never breaks a completion);
3. a request made while the server is starting waits for it (the first completion in a fresh
   workspace is answered, not skipped); a server that exited or timed out on ``initialize`` is
   restarted by the next ``request`` (at most once per ``restart_delay()``: the interval doubles
   with each failed start in a row); in between, requests resolve to ``[]`` at once.
4. ``monitor_for`` keeps a bounded pool: one server per workspace root, at most ``MAX_SERVERS``
   (least recently used shut down first), and a reaper shuts down servers idle for ``IDLE_S``.

What it is not: an editor client. It never applies edits, shows diagnostics or resolves items.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from codedec.monitor.documents import end_position, incremental_change, position

log = logging.getLogger(__name__)

IDENT = re.compile(r"^[^\W\d]\w*$")
# -P: the server runs with the workspace as its working directory, and a workspace's own
# logging.py or types.py must not shadow the standard library the server imports.
DEFAULT_COMMAND = (sys.executable, "-P", "-c", "from jedi_language_server.cli import cli; cli()")
WARMUP_TEXT = "import os\nimport collections\nos.path.\ncollections.\n"


def path_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


class MonitorClient:
    """See the module docstring. Thread-safe: every call is marshalled onto the client's loop."""

    def __init__(
        self,
        root: str | Path,
        command: tuple[str, ...] = DEFAULT_COMMAND,
        *,
        start_timeout_s: float = 30.0,
        restart_interval_s: float = 5.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.command = tuple(command)
        self.start_timeout_s = start_timeout_s
        self.restart_interval_s = restart_interval_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="codedec-monitor", daemon=True)
        self._thread.start()
        self._client = None
        self._ready = False
        self._starting: concurrent.futures.Future | None = None
        self._last_start = 0.0
        self._docs: dict[str, tuple[int, str]] = {}  # uri -> (version, text the server has)
        self.starts = 0
        self.failures = 0  # failed starts in a row: the restart interval doubles with each
        self.closed = False
        self.last_used = time.monotonic()

    # --- life cycle ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready and self._alive()

    def _alive(self) -> bool:
        c = self._client
        return c is not None and not c.stopped and c._server is not None and c._server.returncode is None

    def start(self, wait: bool = True) -> bool:
        """Start (or restart) the server; with ``wait``, block until it is warm. True when ready."""
        if self.closed:
            return False
        if self._starting is None or self._starting.done():
            if self.ready:
                return True
            if self._starting is not None:  # the previous start ended: did it work?
                ok = not self._starting.cancelled() and self._starting.exception() is None and self._starting.result()
                self.failures = 0 if ok else self.failures + 1
            self._last_start = time.monotonic()
            self._starting = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        if not wait:
            return self.ready
        try:
            return bool(self._starting.result(self.start_timeout_s + 5))
        except Exception:  # noqa: BLE001 - reported as not ready
            log.warning("monitor: the language server did not start", exc_info=True)
            return False

    async def _start(self) -> bool:
        from lsprotocol import types
        from pygls.lsp.client import LanguageClient

        await self._stop_client()
        self._ready = False
        self._docs.clear()
        client = LanguageClient("codedec-monitor", "0.1")
        self._client = client  # known before the process starts: a close meanwhile still stops it
        await client.start_io(*self.command, cwd=str(self.root), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        params = types.InitializeParams(
            process_id=os.getpid(),
            root_uri=self.root.as_uri(),
            capabilities=types.ClientCapabilities(),
            initialization_options={
                "diagnostics": {"enable": False},
                "completion": {"disableSnippets": True, "resolveEagerly": False},
            },
        )
        await asyncio.wait_for(client.initialize_async(params), self.start_timeout_s)
        client.initialized(types.InitializedParams())
        warm = self.root / "__codedec_warmup__.py"
        for line in (2, 3):
            await asyncio.wait_for(self._complete(str(warm), WARMUP_TEXT, line, WARMUP_TEXT.split("\n")[line]),
                                   self.start_timeout_s)
        self._ready = True
        log.info("monitor: %s ready (start %d)", " ".join(self.command), self.starts)
        return True

    async def _stop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client._server is not None and client._server.returncode is None:
                client._server.kill()
            await asyncio.wait_for(client.stop(), 2.0)
        except Exception:  # noqa: BLE001 - the process is gone either way
            log.debug("monitor: stopping the old server", exc_info=True)

    def close(self) -> None:
        """Stop the server and the loop thread."""
        if self.closed:
            return
        self.closed = True
        starting = self._starting
        if starting is not None and not starting.done():  # closed while starting (the pool evicts, reaps)
            starting.cancel()
            concurrent.futures.wait([starting], timeout=5)
        try:
            asyncio.run_coroutine_threadsafe(self._stop_client(), self._loop).result(5)
        except Exception:  # noqa: BLE001
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def kill_server(self) -> None:
        """Kill the server process (tests: the next request restarts it)."""
        c = self._client
        if c is not None and c._server is not None and c._server.returncode is None:
            c._server.kill()

    # --- queries ---------------------------------------------------------------------------
    def request(self, path: str, text: str, offset: int) -> concurrent.futures.Future:
        """Completion labels at character ``offset`` of ``text`` (the whole document at
        ``path``), as a future. While the server is starting (a fresh workspace, or a document
        opened a moment ago) the query waits for it; the future resolves to ``[]`` when the
        server failed, or is down and not due for a restart yet."""
        self.last_used = time.monotonic()
        line, col = position(text, offset)
        if not self.ready:
            if not self.closed and (self._starting is None or self._starting.done()) and (
                time.monotonic() - self._last_start >= self.restart_delay()
            ):
                self.start(wait=False)
            starting = self._starting
            if starting is None or starting.done():  # failed, or down and not due for a restart
                return _empty()
            return asyncio.run_coroutine_threadsafe(self._after_start(starting, path, text, line, col), self._loop)
        return asyncio.run_coroutine_threadsafe(self._complete_safe(path, text, line, col), self._loop)

    def restart_delay(self) -> float:
        """Seconds before the next restart: ``restart_interval_s``, doubled per failed start in a
        row (a server that cannot start is not relaunched every few seconds), at most 5 minutes."""
        return min(300.0, self.restart_interval_s * 2 ** min(self.failures, 16))

    async def _after_start(self, starting: concurrent.futures.Future, path: str, text: str, line: int,
                           col: int) -> list[str]:
        try:
            if not await asyncio.wrap_future(starting):
                return []
        except Exception:  # noqa: BLE001 - a failed start is no answer
            return []
        return await self._complete_safe(path, text, line, col)

    async def _complete_safe(self, path: str, text: str, line: int, col: int) -> list[str]:
        try:
            return await self._complete(path, text, line, col)
        except Exception:  # noqa: BLE001 - a monitor never breaks completion
            log.debug("monitor: completion failed", exc_info=True)
            if not self._alive():
                self._ready = False
            return []

    async def _complete(self, path: str, text: str, line: int, col: int | str) -> list[str]:
        from lsprotocol import types

        if isinstance(col, str):  # warm-up: the end of that line
            col = len(col)
        self._sync(path, text)
        result = await self._client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=path_uri(path)),
                position=types.Position(line=line, character=col),
            )
        )
        items = result.items if isinstance(result, types.CompletionList) else (result or [])
        names = []
        for item in items:
            name = item.insert_text or item.label
            if IDENT.match(name):
                names.append(name)
        return names

    def _sync(self, path: str, text: str) -> None:
        """didOpen the first time, then an incremental didChange (runs on the loop)."""
        from lsprotocol import types

        uri = path_uri(path)
        known = self._docs.get(uri)
        client = self._client
        if known is None:
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
            self._docs[uri] = (1, text)
            return
        version, old = known
        change = incremental_change(old, text)
        if change is None:
            return
        rng = types.Range(start=types.Position(*change.start_pos), end=types.Position(*change.end_pos))
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version + 1),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=change.text)],
        ))
        self._docs[uri] = (version + 1, text)


MAX_SERVERS = 4  # language servers kept at once (one per workspace root); the least recently used goes
IDLE_S = 600.0  # a server not asked anything for this long is shut down
_REAP_EVERY_S = 30.0
_CLIENTS: OrderedDict[tuple[Path, tuple[str, ...]], MonitorClient] = OrderedDict()
_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []
_REAPER: list[threading.Thread] = []


def _empty() -> concurrent.futures.Future:
    done: concurrent.futures.Future = concurrent.futures.Future()
    done.set_result([])
    return done


def monitor_for(root: str | Path, command: tuple[str, ...] = DEFAULT_COMMAND) -> MonitorClient:
    """The shared client for a workspace root (started on first use, in the background).

    The pool is bounded: at most ``MAX_SERVERS`` servers (the least recently used is shut down
    for a new one), and a server idle for ``IDLE_S`` is shut down by a reaper thread (the next
    ``monitor_for`` for its root starts a fresh one)."""
    key = (Path(root).resolve(), tuple(command))
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None or client.closed:
            if not _AT_EXIT:
                atexit.register(close_all)
                _AT_EXIT.append(True)
            client = MonitorClient(key[0], command)
            _CLIENTS[key] = client
            client.start(wait=False)
        _CLIENTS.move_to_end(key)
        client.last_used = time.monotonic()
        evicted = [_CLIENTS.popitem(last=False)[1] for _ in range(max(0, len(_CLIENTS) - MAX_SERVERS))]
        if not _REAPER or not _REAPER[0].is_alive():
            _REAPER[:] = [threading.Thread(target=_reap_forever, name="codedec-monitor-reaper", daemon=True)]
            _REAPER[0].start()
    for old in evicted:
        log.info("monitor: closing the language server of %s (more than %d workspaces)", old.root, MAX_SERVERS)
        old.close()
    return client


def reap_idle(now: float | None = None) -> int:
    """Shut down servers idle for ``IDLE_S`` (and drop closed ones); returns how many."""
    now = time.monotonic() if now is None else now
    with _LOCK:
        idle = [k for k, c in _CLIENTS.items() if c.closed or now - c.last_used >= IDLE_S]
        gone = [_CLIENTS.pop(k) for k in idle]
    for client in gone:
        if not client.closed:
            log.info("monitor: closing the idle language server of %s", client.root)
            client.close()
    return len(gone)


def _reap_forever() -> None:
    while True:
        time.sleep(_REAP_EVERY_S)
        with _LOCK:
            if not _CLIENTS:
                _REAPER.clear()
                return
        reap_idle()


def close_all() -> None:
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()


__all__ = ["MonitorClient", "close_all", "end_position", "monitor_for", "path_uri", "reap_idle"]
