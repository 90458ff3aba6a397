"""Soak test (issue E11): replayed editing sessions against the real server for N minutes.

Starts ``python -m lsp_server --no-lsp --ws 127.0.0.1:PORT`` with the embedded model (the same
service the editors use) and, optionally, a CPU hog beside it. ``--sessions`` simulated users each
take real Python files from installed packages (one of them large), and type a line of them back
character by character (``--cps`` characters per second), asking for a completion at every
keystroke as an editor does (each request supersedes the previous one of its file); after
``--lines-per-spot`` consecutive lines they jump to another file and spot. Reports per
minute and overall: answered requests, p50/p99 latency of answers (send to ``done``), empty and
timed-out answers, errors, cancelled (superseded) requests, and the server's RSS.

    .venv/bin/python benchmarks/soak_server.py --minutes 10 --hog      # the recorded run
    .venv/bin/python benchmarks/soak_server.py --minutes 1              # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

PACKAGES = ("rich", "jedi", "pygls", "websockets", "transformers")


def source_files(rnd: random.Random, n: int) -> list[Path]:
    """``n`` real Python files from installed packages, the largest one among them first."""
    files: list[Path] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            files += [p for p in Path(spec.submodule_search_locations[0]).rglob("*.py") if p.stat().st_size > 2000]
    files.sort()
    largest = max(files, key=lambda p: p.stat().st_size)
    picked = rnd.sample(files, min(n - 1, len(files)))
    return [largest, *picked]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Stats:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        self.rows.append(row)

    def summary(self, rows: list[dict]) -> str:
        answered = [r for r in rows if r["kind"] == "done" and r["finish"] != "cancelled"]
        lat = sorted(r["latency_ms"] for r in answered)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
        empty = sum(1 for r in answered if not r["text"])
        timeouts = sum(1 for r in answered if r["finish"] == "time")
        errors = sum(1 for r in rows if r["kind"] == "error")
        cancelled = sum(1 for r in rows if r["kind"] == "done" and r["finish"] == "cancelled")
        return (f"answered {len(answered):4d}  p50 {p(0.5):6.0f} ms  p99 {p(0.99):6.0f} ms  empty {empty:3d}  "
                f"time {timeouts:3d}  errors {errors}  superseded {cancelled:4d}")


async def user(uid: int, url: str, files: list[Path], rnd: random.Random, stop_at: float, cps: float,
               lines_per_spot: int, stats: Stats) -> None:
    """One editing session: open a file, pick a spot, type ``lines_per_spot`` lines there back one
    character at a time, asking at every keystroke; then another file and spot."""
    async with connect(url, max_size=None) as ws:
        pending: dict[str, tuple[float, str]] = {}
        reader_done = asyncio.Event()

        async def reader() -> None:
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "delta":
                        continue
                    sent, path = pending.pop(msg["id"], (time.monotonic(), ""))
                    if msg["type"] == "done":
                        stats.add(kind="done", t=time.monotonic(), user=uid, path=path,
                                  latency_ms=(time.monotonic() - sent) * 1e3, text=msg["text"],
                                  finish=msg["stats"].get("finish_reason"),
                                  prompt_tokens=msg["stats"].get("prompt_tokens"),
                                  reused=msg["stats"].get("reused_tokens"),
                                  threads=msg["stats"].get("threads"),
                                  preemptions=msg["stats"].get("preemptions"))
                    else:
                        stats.add(kind="error", t=time.monotonic(), user=uid, path=path, error=msg["error"])
            finally:
                reader_done.set()

        task = asyncio.create_task(reader())
        n = 0
        while time.monotonic() < stop_at:
            path = rnd.choice(files)
            text = path.read_text(encoding="utf-8", errors="replace")
            lines = text.splitlines(keepends=True)
            candidates = [i for i, line in enumerate(lines) if 10 <= len(line.strip()) <= 80]
            if not candidates:
                continue
            first = rnd.choice(candidates)
            for i in range(first, min(first + lines_per_spot, len(lines))):  # consecutive lines at one spot
                target = lines[i]
                indent = len(target) - len(target.lstrip())
                head = "".join(lines[:i]) + target[:indent]
                tail = "\n" + "".join(lines[i + 1:])
                for k in range(indent, len(target.rstrip("\n")) + 1):
                    if time.monotonic() >= stop_at:
                        break
                    typed = head + target[indent:k]
                    req_id = f"u{uid}-{n}"
                    n += 1
                    pending[req_id] = (time.monotonic(), path.name)
                    await ws.send(json.dumps({"type": "complete", "id": req_id, "text": typed + tail,
                                              "cursor": len(typed), "path": str(path),
                                              "options": {"single_line": rnd.random() < 0.7}}))
                    await asyncio.sleep(rnd.expovariate(cps))
                await asyncio.sleep(rnd.uniform(0.5, 2.0))  # the user reads the suggestion, goes on
        await asyncio.sleep(3.0)  # let the last answers arrive
        await ws.close()
        await reader_done.wait()
        task.cancel()


async def soak(args: argparse.Namespace) -> int:
    rnd = random.Random(args.seed)
    files = source_files(rnd, args.files)
    print(f"files: {len(files)} (largest {files[0].name}, {files[0].stat().st_size // 1024} KB)", flush=True)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen([sys.executable, "-m", "lsp_server", "--model", args.model, "--no-lsp", "--ws",
                               f"127.0.0.1:{port}", "--telemetry", ""], env=env, stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
    try:
        deadline = time.monotonic() + 300
        for line in server.stderr:
            if "websocket API on" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
        else:
            raise RuntimeError("the server exited")
        asyncio.get_running_loop().run_in_executor(None, lambda: [None for _ in server.stderr])  # drain
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url) as ws:  # wait until the model answers
            await ws.send(json.dumps({"type": "complete", "id": "warm", "text": "def f():\n", "cursor": 9}))
            while json.loads(await ws.recv())["type"] == "delta":
                pass
        stats = Stats()
        t0 = time.monotonic()
        stop_at = t0 + args.minutes * 60
        users = [user(u, url, files, random.Random(args.seed * 100 + u), stop_at, args.cps, args.lines_per_spot,
                      stats)
                 for u in range(args.sessions)]
        gathered = asyncio.gather(*users)
        print(f"soak: {args.sessions} editing sessions, {args.minutes} min, {args.hog} CPU hog(s), model "
              f"{args.model}, {args.lines_per_spot} line(s) per spot, {args.cps} chars/s", flush=True)
        minute = 0
        while not gathered.done():
            await asyncio.sleep(1.0)
            if time.monotonic() - t0 >= 60 * (minute + 1) or gathered.done():
                lo, hi = t0 + 60 * minute, t0 + 60 * (minute + 1)
                rows = [r for r in stats.rows if lo <= r["t"] < hi]
                print(f"min {minute + 1:3d}: {stats.summary(rows)}  rss {rss_mb(server.pid):6.0f} MB", flush=True)
                minute += 1
        await gathered
        print(f"total  : {stats.summary(stats.rows)}  rss {rss_mb(server.pid):6.0f} MB", flush=True)
        answered = [r for r in stats.rows if r["kind"] == "done" and r["finish"] != "cancelled"]
        ran = [r for r in answered if r.get("prompt_tokens")]  # not answered at once for a spent budget
        if ran:
            print(f"{len(answered) - len(ran)} answered at once (budget spent in the queue); of the rest: mean "
                  f"prompt tokens {statistics.mean(r['prompt_tokens'] for r in ran):.0f}, mean reuse "
                  f"{100 * statistics.mean(r['reused'] / r['prompt_tokens'] for r in ran):.0f} %, threads used "
                  f"{sorted({r['threads'] for r in ran})}, preempted {sum(1 for r in ran if r.get('preemptions'))}")
        for r in stats.rows:
            if r["kind"] == "error":
                print(f"error: {r['error']}")
                break
        if args.out:
            with open(args.out, "w") as f:
                for r in stats.rows:
                    f.write(json.dumps({**r, "t": round(r["t"] - t0, 3)}) + "\n")
        return 0
    finally:
        for p in hogs:
            p.kill()
            p.wait()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, default=3, help="simulated users typing at once")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--cps", type=float, default=6.0, help="typing speed, characters per second")
    ap.add_argument("--lines-per-spot", type=int, default=4,
                    help="consecutive lines typed at one spot before jumping elsewhere (1: jump after each line)")
    ap.add_argument("--hog", type=int, nargs="?", const=1, default=0, help="CPU hogs beside the server")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write every request's row here (JSONL)")
    return asyncio.run(soak(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
