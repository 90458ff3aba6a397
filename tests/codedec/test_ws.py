"""Websocket API: streaming, cancel, supersede, bad input, tokens (a real server on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from codedec.engine import Engine
from codedec.service import CompletionService
from codedec.ws import WebsocketAPI, check_bind, is_loopback, parse_hostport

aio = pytest.mark.asyncio(loop_scope="module")

T = 20
TEXT = "import os\n\n\ndef main():\n    x = 1\n"
LONG = {"max_tokens": 3000, "time_budget_ms": 0}
PATH = ""  # the documents' path, in an empty workspace (set by _workspace)


@pytest.fixture(scope="module", autouse=True)
def _workspace(tmp_path_factory):
    """An empty workspace for the documents. A path in /tmp made /tmp the workspace: the
    cross-file context gathered from whatever .py files lie there (indexed a little more on
    each request, within its time budget) changed the prompt between requests, so the
    cache-reuse check failed at random."""
    global PATH
    root = tmp_path_factory.mktemp("ws-workspace")
    (root / "pyproject.toml").write_text("")
    PATH = str(root / "x.py")


@pytest.fixture(scope="module")
def service(tiny):
    svc = CompletionService(Engine(tiny))
    yield svc
    svc.close()


async def recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), T))


async def until_done(ws, req_id) -> tuple[list[str], dict]:
    deltas = []
    while True:
        msg = await recv(ws)
        assert msg["id"] == req_id, msg
        if msg["type"] == "delta":
            deltas.append(msg["text"])
        else:
            return deltas, msg


def complete(req_id, text=TEXT, cursor=None, **options) -> str:
    return json.dumps(
        {
            "type": "complete",
            "id": req_id,
            "text": text,
            "cursor": len(text) if cursor is None else cursor,
            "path": PATH,
            "language": "python",
            "options": {"max_tokens": 12, **options},
        }
    )


def url(server, query: str = "") -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"ws://{host}:{port}/{query}"


@aio
async def test_stream_then_done(service):
    api = WebsocketAPI(service)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        await ws.send(complete("a"))
        deltas, done = await until_done(ws, "a")
        assert done["type"] == "done" and deltas and "".join(deltas) == done["text"]
        assert done["stats"]["finish_reason"] in ("length", "stop", "time")
        assert done["stats"]["new_tokens"] > 0 and "ttft_ms" in done["stats"]
        # Same path again: the KV cache of that path is reused.
        await ws.send(complete(7, single_line=True))
        _, again = await until_done(ws, 7)
        assert again["stats"]["reused_tokens"] > 0


@aio
async def test_cancel_stops_the_request(service):
    api = WebsocketAPI(service)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        await ws.send(complete("long", **LONG))
        first = await recv(ws)
        assert first["type"] == "delta"
        t0 = time.monotonic()
        await ws.send(json.dumps({"type": "cancel", "id": "long"}))
        _, done = await until_done(ws, "long")
        assert done["type"] == "done" and done["stats"]["finish_reason"] == "cancelled"
        assert done["stats"]["new_tokens"] < 3000 and time.monotonic() - t0 < 5
        await ws.send(json.dumps({"type": "cancel", "id": "long"}))  # already finished: ignored
        await ws.send(complete("next"))
        _, done = await until_done(ws, "next")
        assert done["type"] == "done"


@aio
async def test_same_path_supersedes(service):
    api = WebsocketAPI(service)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        await ws.send(complete(1, **LONG))
        assert (await recv(ws))["type"] == "delta"
        await ws.send(complete(2))
        results = {}
        while len(results) < 2:
            msg = await recv(ws)
            if msg["type"] != "delta":
                results[msg["id"]] = msg
        assert results[1]["stats"]["finish_reason"] == "cancelled"
        assert results[2]["stats"]["finish_reason"] != "cancelled"


@aio
@pytest.mark.parametrize(
    "message, fragment",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"type": "explode", "id": 1}), "unknown message type"),
        (json.dumps({"type": "complete", "id": 1, "text": "x", "cursor": 5}), "cursor"),
        (json.dumps({"type": "complete", "id": True, "text": "x", "cursor": 1}), "'id'"),
        (json.dumps({"type": "complete", "id": 1, "text": 3, "cursor": 0}), "'text'"),
        (complete(1, max_tokens=0), "max_tokens"),
        (complete(1, decoding="bogus"), "bogus"),
        (complete(1, colour="red"), "unknown option"),
        (complete(1, temperature=-1), "temperature"),
        ("x" * 5000, "too large"),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_stays_usable(service, message, fragment):
    api = WebsocketAPI(service, max_message_bytes=4096)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        await ws.send(message)
        reply = await recv(ws)
        assert reply["type"] == "error" and fragment in reply["error"], reply
        await ws.send(complete("ok"))
        _, done = await until_done(ws, "ok")
        assert done["type"] == "done"


@aio
async def test_duplicate_running_id_is_refused(service):
    api = WebsocketAPI(service)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        await ws.send(complete("dup", **LONG))
        await ws.send(complete("dup"))
        while (msg := await recv(ws))["type"] == "delta":
            pass
        assert msg["type"] == "error" and "still running" in msg["error"]
        await ws.send(json.dumps({"type": "cancel", "id": "dup"}))
        _, done = await until_done(ws, "dup")
        assert done["stats"]["finish_reason"] == "cancelled"


@aio
async def test_closing_the_connection_cancels_its_requests(service):
    api = WebsocketAPI(service)
    async with api.running("127.0.0.1", 0) as server:
        async with connect(url(server)) as ws:
            await ws.send(complete("orphan", **LONG))
            assert (await recv(ws))["type"] == "delta"
        t0 = time.monotonic()
        async with connect(url(server)) as ws:
            await ws.send(complete("after", text="def f():\n    "))
            _, done = await until_done(ws, "after")
            assert done["type"] == "done" and time.monotonic() - t0 < 5


@aio
async def test_token_is_required_when_set(service):
    api = WebsocketAPI(service, token="s3cret")
    async with api.running("127.0.0.1", 0) as server:
        with pytest.raises(InvalidStatus) as err:
            async with connect(url(server)):
                pass
        assert err.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(url(server, "?token=wrong")):
                pass
        for header in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret "):  # the scheme is case-insensitive
            async with connect(url(server), additional_headers={"Authorization": header}) as ws:
                await ws.send(complete("t"))
                assert (await until_done(ws, "t"))[1]["type"] == "done"
        with pytest.raises(InvalidStatus):
            async with connect(url(server), additional_headers={"Authorization": "Basic s3cret"}):
                pass
        async with connect(url(server, "?token=s3cret")) as ws:
            await ws.send(complete("q"))
            assert (await until_done(ws, "q"))[1]["type"] == "done"


def test_bind_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "token")
    with pytest.raises(ValueError, match="--ws-token"):
        check_bind("0.0.0.0", None)


@pytest.mark.parametrize(
    "spec, want",
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        (":9000", ("127.0.0.1", 9000)),
        ("9001", ("127.0.0.1", 9001)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_hostport(spec, want):
    assert parse_hostport(spec) == want


@pytest.mark.parametrize("spec", ["host:port", "1.2.3.4:70000", ""])
def test_parse_hostport_rejects(spec):
    with pytest.raises(ValueError):
        parse_hostport(spec)


@aio
async def test_browser_origins_are_refused_unless_allowed(service):
    """Cross-site WebSocket hijacking: a page the user visits must not drive the loopback API."""
    api = WebsocketAPI(service, allowed_origins=["vscode-webview://codedec"])
    async with api.running("127.0.0.1", 0) as server:
        with pytest.raises(InvalidStatus) as err:
            async with connect(url(server), origin="https://evil.example"):
                pass
        assert err.value.response.status_code == 403
        for origin in (None, "vscode-webview://codedec"):  # no Origin (editors, scripts), or allowed
            async with connect(url(server), origin=origin) as ws:
                await ws.send(complete("o"))
                assert (await until_done(ws, "o"))[1]["type"] == "done"


@aio
async def test_oversized_messages_as_documented(service):
    """Over max_message_bytes: an error reply, the connection stays; over 16x: closed with 1009."""
    from websockets.exceptions import ConnectionClosed

    api = WebsocketAPI(service, max_message_bytes=64 * 1024)
    async with api.running("127.0.0.1", 0) as server, connect(url(server), max_size=None) as ws:
        await ws.send("x" * (200 * 1024))
        reply = await recv(ws)
        assert reply["type"] == "error" and "too large" in reply["error"]
        await ws.send("x" * (17 * 64 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd.code == 1009


@aio
async def test_one_connection_may_not_flood_the_queue(service):
    api = WebsocketAPI(service, max_active=2)
    async with api.running("127.0.0.1", 0) as server, connect(url(server)) as ws:
        for i in range(3):
            msg = json.loads(complete(f"r{i}", **LONG))
            msg["path"] = f"/tmp/flood{i}.py"  # different documents: no supersede
            await ws.send(json.dumps(msg))
        error = None
        while error is None:
            msg = await recv(ws)
            if msg["type"] == "error":
                error = msg
        assert error["id"] == "r2" and "limit 2" in error["error"]
        for i in range(2):
            await ws.send(json.dumps({"type": "cancel", "id": f"r{i}"}))
        finished = set()
        while len(finished) < 2:
            msg = await recv(ws)
            if msg["type"] == "done":
                finished.add(msg["id"])
        assert finished == {"r0", "r1"}
