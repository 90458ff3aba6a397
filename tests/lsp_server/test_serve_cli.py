"""``codedec serve`` options, ``codedec stats`` and the transports (TCP, websocket-only) as processes."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time

import pytest
from lsp_helpers import SERVER_ENV

from lsp_server.cli import add_serve_arguments, run_serve, settings_from_args
from lsp_server.stats import add_stats_arguments, run_stats, summarize
from lsp_server.telemetry import TelemetryLog, read_events, resolve_path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_settings_from_the_command_line():
    s = settings_from_args(
        parse(
            "--model",
            "tiny-random",
            "--decoding",
            "no-fences",
            "--max-tokens",
            "20",
            "--debounce-ms",
            "30",
            "--time-budget-ms",
            "0",
            "--languages",
            "python,lua",
            "--line-mode",
            "single",
            "--no-heal",
            "--telemetry",
            "",
        )
    )
    assert (s.model, s.decoding, s.max_tokens, s.debounce_ms, s.time_budget_ms) == (
        "tiny-random",
        ("no-fences",),
        20,
        30,
        None,
    )
    assert (s.languages, s.line_mode, s.heal, s.telemetry_path) == (("python", "lua"), "single", False, "")
    assert settings_from_args(parse()).model == "smollm2"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--decoding", "bogus"], "bogus"),
        (["--no-lsp"], "--ws"),
        (["--ws", "0.0.0.0:8765"], "--ws-token"),
        (["--ws", "nowhere"], "HOST:PORT"),
        (["--max-tokens", "0"], "max_tokens"),
    ],
)
def test_bad_options_exit_2_with_one_message(argv, fragment, capsys):
    assert run_serve(parse(*argv, "--ws-token", "") if "--ws-token" in fragment else parse(*argv)) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_stdio_and_tcp_are_exclusive():
    with pytest.raises(SystemExit):
        parse("--stdio", "--tcp", "127.0.0.1:1")


def test_telemetry_and_stats(tmp_path, capsys):
    path = tmp_path / "sub" / "t.jsonl"
    log = TelemetryLog(path)
    for i, (lat, source) in enumerate([(100.0, "model"), (200.0, "model"), (1.0, "cache"), (300.0, "model")]):
        log.write("completion", id=i, source=source, chars=5, latency_ms=lat, first_partial_ms=lat / 2)
    log.write("completion", id=9, source="model", chars=0, latency_ms=50.0, finish_reason="cancelled")
    log.write("accept", id=0)
    log.write("accept", id=1)
    log.write("reject", id=2)
    with path.open("a") as f:
        f.write('{"event": "accept", "id": 3')  # a line cut by a crash is skipped
    s = summarize(read_events(path))
    assert (s["requests"], s["shown"], s["accepted"], s["rejected"], s["cache_hits"]) == (5, 4, 2, 1, 1)
    assert s["acceptance_rate"] == pytest.approx(2 / 3) and s["cache_hit_rate"] == pytest.approx(0.2)
    assert s["latency_ms"]["model"]["p50"] == pytest.approx(200.0) and s["cancelled"] == 1

    parser = argparse.ArgumentParser()
    add_stats_arguments(parser)
    assert run_stats(parser.parse_args(["--log", str(path), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == 2
    assert run_stats(parser.parse_args(["--log", str(path)])) == 0
    text = capsys.readouterr().out
    assert "acceptance      66.7%" in text and "p50 200.0 ms" in text
    assert run_stats(parser.parse_args(["--log", str(tmp_path / "none.jsonl")])) == 1
    assert "uncertainty" not in text  # nothing withheld or cut: no line
    assert resolve_path("") is None and resolve_path(None).name == "telemetry.jsonl"
    # An unwritable path turns the log off instead of failing.
    bad = TelemetryLog(tmp_path / "sub" / "t.jsonl" / "x.jsonl")
    bad.write("accept", id=1)
    assert bad.path is None
    # With nothing logged the summary has no numbers, and JSON stays valid (no NaN).
    empty = summarize([])
    assert (
        empty["acceptance_rate"] is None
        and json.loads(json.dumps(empty))["latency_ms"]["model"]["p50"] is None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rpc(msg_id: int, method: str, params: dict) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_lsp_over_tcp():
    port = _free_port()
    cmd = [sys.executable, "-m", "lsp_server", "--model", "tiny-random", "--tcp", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, env=SERVER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=20)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the TCP server did not start"
                time.sleep(0.1)
        with sock:
            sock.sendall(_rpc(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {}}))
            data = b""
            while b"serverInfo" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, "connection closed"
                data += chunk
            reply = json.loads(data.split(b"\r\n\r\n", 1)[1])
            assert reply["id"] == 1 and "inlineCompletionProvider" in reply["result"]["capabilities"]
    finally:
        proc.kill()
        proc.wait(10)


def test_websocket_only_process():
    from websockets.sync.client import connect

    cmd = [sys.executable, "-m", "lsp_server", "--model", "tiny-random", "--no-lsp", "--ws", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, env=SERVER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert time.monotonic() < deadline and proc.poll() is None, "no websocket address on stderr"
            m = re.search(r"ws://\S+", proc.stderr.readline())
            url = m.group(0) if m else None
        with connect(url, open_timeout=20) as ws:
            text = "def add(a, b):\n    "
            ws.send(
                json.dumps(
                    {
                        "type": "complete",
                        "id": 1,
                        "text": text,
                        "cursor": len(text),
                        "options": {"max_tokens": 8},
                    }
                )
            )
            while (msg := json.loads(ws.recv(timeout=20)))["type"] == "delta":
                pass
            assert msg["type"] == "done" and msg["id"] == 1
    finally:
        proc.kill()
        proc.wait(10)


def test_stats_count_the_uncertainty_rules(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    log = TelemetryLog(path)
    log.write("completion", id=1, source="model", chars=0, latency_ms=10.0, withheld=True, first_token_prob=0.01)
    log.write("completion", id=2, source="model", chars=9, latency_ms=10.0, cut_chars=40)
    log.write("completion", id=3, source="model", chars=9, latency_ms=10.0, cut_chars=12)
    log.write("completion", id=4, source="model", chars=30, latency_ms=10.0)
    log.write("accept", id=2)
    log.write("accept", id=3)
    log.write("reject", id=4)
    u = summarize(read_events(path))["uncertainty"]
    assert (u["withheld"], u["cut"], u["acceptance_cut"], u["acceptance_uncut"]) == (1, 2, 1.0, 0.0)
    assert u["withheld_rate"] == pytest.approx(0.25) and u["cut_rate"] == pytest.approx(0.5)
    parser = argparse.ArgumentParser()
    add_stats_arguments(parser)
    assert run_stats(parser.parse_args(["--log", str(path)])) == 0
    assert "uncertainty     withheld 1 (25.0%), cut 2 (50.0%); acceptance cut 100.0%, not cut 0.0%" in \
        capsys.readouterr().out
