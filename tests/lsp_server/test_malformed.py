"""Raw JSON-RPC over stdio: a request whose params do not deserialize gets an InvalidParams error
response (pygls alone only logs it, and the client waits forever), and the server goes on."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

from lsp_helpers import SERVER_ENV, server_command


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_until(proc, want_id, timeout=20.0) -> dict:
    buf, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "the server closed its output"
            buf += chunk
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            if len(rest) < length:
                break
            msg, buf = json.loads(rest[:length]), rest[length:]
            if msg.get("id") == want_id and "method" not in msg:
                return msg
    raise AssertionError(f"no reply to request {want_id} within {timeout} s")


def test_malformed_params_get_an_error_reply():
    proc = subprocess.Popen([*server_command(), "--telemetry", ""], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=SERVER_ENV)
    try:
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}))
        proc.stdin.flush()
        assert "capabilities" in _read_until(proc, 1)["result"]
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion",
                                 "params": [{"textDocument": {"uri": "file:///a.py"}}]}))
        proc.stdin.flush()
        error = _read_until(proc, 2)["error"]
        assert error["code"] == -32602 and "textDocument/inlineCompletion" in error["message"]
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
        proc.stdin.flush()
        assert "result" in _read_until(proc, 3)  # still serving
    finally:
        proc.kill()
        proc.wait(10)
