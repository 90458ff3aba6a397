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


class _Session:
    """A raw byte pipe to the real server; ``messages`` holds everything it wrote."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([*server_command(), "--telemetry", ""], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=SERVER_ENV)
        self.buf, self.messages = b"", []

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def pump(self, until, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if until(msg):
                    return msg
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "the server closed its output"
                self.buf += chunk
            while b"\r\n\r\n" in self.buf:
                head, rest = self.buf.split(b"\r\n\r\n", 1)
                length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length"))
                if len(rest) < length:
                    break
                self.messages.append(json.loads(rest[:length]))
                self.buf = rest[length:]
        raise AssertionError(f"nothing matched within {timeout} s; got {self.messages[-5:]}")

    def error_count(self, code: int) -> int:
        return sum(1 for m in self.messages if "method" not in m and m.get("error", {}).get("code") == code)

    def expect_error(self, code: int, before: int) -> dict:
        """Wait for the (before+1)-th error response with ``code``."""
        self.pump(lambda _m: self.error_count(code) > before)
        return [m for m in self.messages if "method" not in m and m.get("error", {}).get("code") == code][before]

    def close(self) -> str:
        self.proc.kill()
        self.proc.wait(10)
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stdin.close()
        self.proc.stderr.close()
        return err


def _rpc(id_, method, params=None) -> bytes:
    msg = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return _frame(msg)


def test_hostile_frames_get_json_rpc_errors_and_the_stream_recovers():
    s = _Session()
    try:
        inline = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0},
                  "context": {"triggerKind": 1}}
        s.send(_rpc(1, "textDocument/inlineCompletion", inline))  # before initialize
        assert s.expect_error(-32002, 0)["id"] == 1
        s.send(_rpc(2, "initialize", {"capabilities": {}}))
        assert "capabilities" in s.pump(lambda m: m.get("id") == 2)["result"]
        s.send(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))

        s.send(b"Content-Length: 1000000000000\r\n\r\n")  # would be a MemoryError
        assert s.expect_error(-32600, 0)["id"] is None
        s.send(_rpc(3, "shutdown_probe_unknown"))  # resynchronised: this frame is read
        assert s.expect_error(-32601, 0)["id"] == 3

        s.send(b"Content-Length: -5\r\n\r\n{}")
        s.send(_rpc(4, "unknown/second"))
        assert s.expect_error(-32601, 1)["id"] == 4
        s.send(b"Content-Type: application/json\r\n\r\n{\"no\": \"length\"}")
        s.send(_rpc(41, "unknown/again"))
        assert s.expect_error(-32601, 2)["id"] == 41
        assert s.error_count(-32700) == 2  # both header blocks were answered

        s.send(b"Content-Length: 9\r\n\r\n{not json")
        s.send(b"Content-Length: 7\r\n\r\n[1,2,3]")  # a batch
        s.send(_frame({"id": 6, "method": "initialize"}))  # no "jsonrpc"
        deep = b"[" * 100_000 + b"]" * 100_000
        s.send(b"Content-Length: %d\r\n\r\n" % len(deep) + deep)
        s.send(b"Content-Length: 40\r\n\r\n" + b'{"jsonrpc": "2.0", "id": 7, "method": "t"}')  # 42 bytes: 2 too few
        s.send(_rpc(8, "unknown/third"))
        assert s.expect_error(-32601, 3)["id"] == 8
        assert s.error_count(-32700) >= 2 + 3  # bad JSON, deep nesting, the cut body
        invalid = [m for m in s.messages if m.get("error", {}).get("code") == -32600]
        assert {m["id"] for m in invalid} >= {None, 6}

        s.send(_rpc(9, "shutdown"))
        assert "result" in s.pump(lambda m: m.get("id") == 9)  # still serving
        assert not [m for m in s.messages if m.get("method") == "window/showMessage"]  # no popups
    finally:
        err = s.close()
    assert "rejected LSP message" in err  # one log line each, on stderr
