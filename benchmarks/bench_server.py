"""Language-server benchmark: server overhead per request, and the typed-ahead cache hit rate.

Both parts drive the real server process (``python -m lsp_server``) over stdio with a pygls client,
as an editor would.

1. **Server overhead** (target p50 <= 10 ms): for ``--requests`` inline-completion requests at
   distinct line ends of a real source file (no typed-ahead hits), the time from sending the request
   to the first ``codedec/partial`` notification at the client, minus the engine's own time to that
   first text (``first_text_ms``, from the engine's generate start; read back from the server's
   telemetry log by request id). What remains is JSON-RPC transport both ways, the handler, the
   cursor heuristics, prompt assembly (tokenization; printed separately), the queue hop to the
   engine thread and the hop back to the event loop.
2. **Typed-ahead hit rate**: a typing session replayed over a real file: whole lines (about
   ``--keystrokes`` characters) are removed and re-typed one character at a time (didChange, then inlineCompletion after each,
   waiting for the answer like a fast editor). Hit rate = requests served from the result cache /
   requests that needed a suggestion (the rest went to the model). Run with a real model
   (``--typing-model smollm2``): a random model's suggestions never match what is typed.

    .venv/bin/python benchmarks/bench_server.py [--model tiny-random] [--requests 120]
        [--typing-model smollm2] [--keystrokes 300] [--file codedec/engine.py]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from codedec.metrics import percentiles

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


class Client:
    """A pygls client around one server process, recording when each request's first partial came."""

    def __init__(self, model: str, telemetry: Path, **options) -> None:
        self.model = model
        self.telemetry = telemetry
        self.options = {"telemetryPath": str(telemetry), "timeBudgetMs": 0, **options}
        self.lsp = LanguageClient("bench", "0")
        self.first_partial: dict[str, float] = {}
        self.version = 1

        @self.lsp.feature("codedec/partial")
        def on_partial(ls, params):
            self.first_partial.setdefault(params.id, time.perf_counter())

        @self.lsp.feature("codedec/status")
        def on_status(ls, params):  # loading / ready: not measured here
            pass

    async def start(self) -> None:
        await self.lsp.start_io(
            sys.executable, "-m", "lsp_server", "--model", self.model, env=ENV, cwd=str(ROOT)
        )
        await self.lsp.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(), initialization_options=self.options
            )
        )
        self.lsp.initialized(types.InitializedParams())

    async def stop(self) -> None:
        await self.lsp.shutdown_async(None)
        self.lsp.exit(None)
        await self.lsp.stop()

    def open(self, uri: str, text: str) -> None:
        self.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )

    def insert(self, uri: str, line: int, col: int, text: str) -> None:
        self.version += 1
        pos = types.Position(line=line, character=col)
        self.lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)
                ],
            )
        )

    async def inline(self, uri: str, line: int, col: int, msg_id: str) -> tuple[float, list]:
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=col),
        )
        t = time.perf_counter()
        result = await self.lsp.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
        )
        return t, list(result.items) if result is not None else []

    def events(self) -> dict[str, dict]:
        out = {}
        for line in self.telemetry.read_text().splitlines():
            e = json.loads(line)
            if e.get("event") == "completion":
                out[str(e["id"])] = e
        return out


async def bench_overhead(model: str, requests: int, source: Path, tmp: Path) -> dict:
    text = source.read_text()
    lines = text.split("\n")
    # Line ends with code on them: a suggestion is wanted there, each cursor is new.
    spots = [(i, len(ln)) for i, ln in enumerate(lines) if ln.strip() and not ln.rstrip().endswith("\\")]
    if len(spots) < requests:
        raise SystemExit(f"{source} has only {len(spots)} usable lines; ask for fewer --requests")
    step = len(spots) / requests
    spots = [spots[int(k * step)] for k in range(requests)]
    client = Client(model, tmp / "overhead.jsonl", maxTokens=8)
    await client.start()
    try:
        uri = source.resolve().as_uri()
        client.open(uri, text)
        await client.inline(uri, *spots[0], "warmup")  # waits for the model load
        sent: dict[str, float] = {}
        for k, (line, col) in enumerate(spots):
            t, _ = await client.inline(uri, line, col, f"r{k}")
            sent[f"r{k}"] = t
    finally:
        await client.stop()
    events = client.events()
    overhead, to_partial, engine, prompt, protocol = [], [], [], [], []
    for rid, t in sent.items():
        e = events.get(rid)
        if e is None or rid not in client.first_partial or e.get("first_text_ms") is None:
            continue  # no visible text (mode none, or the model stopped at once)
        client_ms = (client.first_partial[rid] - t) * 1000.0
        overhead.append(client_ms - e["first_text_ms"])
        to_partial.append(client_ms)
        engine.append(e["first_text_ms"])
        prompt.append(e["prompt_ms"])
        protocol.append(client_ms - e["first_text_ms"] - e["prompt_ms"])
    return {
        "model": model,
        "requests": len(sent),
        "measured": len(overhead),
        "overhead_ms": percentiles(overhead, (50, 95)),
        "first_partial_ms": percentiles(to_partial, (50, 95)),
        "engine_first_text_ms": percentiles(engine, (50, 95)),
        "prompt_ms": percentiles(prompt, (50, 95)),
        "protocol_ms": percentiles(protocol, (50, 95)),
    }


async def bench_typing(model: str, keystrokes: int, source: Path, start_line: int, tmp: Path) -> dict:
    lines = source.read_text().split("\n")
    # Whole lines are removed (an empty line stays for the cursor) and typed again, so the text
    # after the cursor is always the rest of the file from the next line on.
    end = start_line
    while end < len(lines) and len("\n".join(lines[start_line:end])) < keystrokes:
        end += 1
    typed = "\n".join(lines[start_line:end])[:keystrokes]
    doc = "\n".join(lines[:start_line] + [""] + lines[end:])
    client = Client(model, tmp / "typing.jsonl", maxTokens=16, lineMode="single")
    await client.start()
    t0 = time.perf_counter()
    try:
        uri = source.resolve().as_uri()
        client.open(uri, doc)
        line, col = start_line, 0
        await client.inline(uri, line, col, "warmup")
        for k, ch in enumerate(typed):
            client.insert(uri, line, col, ch)
            line, col = (line + 1, 0) if ch == "\n" else (line, col + 1)
            await client.inline(uri, line, col, f"k{k}")
    finally:
        await client.stop()
    events = [e for rid, e in client.events().items() if rid.startswith("k")]
    cache = sum(1 for e in events if e["source"] == "cache")
    model_calls = sum(1 for e in events if e["source"] == "model")
    return {
        "model": model,
        "file": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source),
        "keystrokes": len(typed),
        "requests_needing_a_suggestion": cache + model_calls,
        "cache_hits": cache,
        "model_calls": model_calls,
        "hit_rate": cache / (cache + model_calls) if cache + model_calls else float("nan"),
        "seconds": time.perf_counter() - t0,
    }


def prompt_memo_ratio(model: str, path: Path, requests: int = 40) -> tuple[float, float]:
    """In-process, side by side: ``build_prompt`` p50 (ms) at successive line ends of ``path``
    with the per-line token-count memo off, then on (the memo is what makes a large file cheap)."""
    import statistics

    from codedec.context import fim
    from codedec.loading import load_model

    loaded = load_model(model)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    spots = [len(lines) // 3 + 7 * k for k in range(requests)]
    spots = [min(i, len(lines)) for i in spots]
    budget = int(loaded.preset.get("context_tokens") or 2048) - 64
    memo_size = fim.LINE_COST_MEMO
    out = []
    try:
        for size in (0, memo_size):  # 0: the memo is cleared on every call
            fim.LINE_COST_MEMO = size
            fim._LINE_COSTS.pop(loaded.tokenizer, None)
            times = []
            for i in spots:
                t = time.perf_counter()
                fim.build_prompt(loaded.preset, loaded.tokenizer, "".join(lines[:i]), "".join(lines[i:]),
                                 max_tokens=budget)
                times.append((time.perf_counter() - t) * 1e3)
            out.append(statistics.median(times[1:]))
    finally:
        fim.LINE_COST_MEMO = memo_size
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default="tiny-random", help="model for the overhead part (default tiny-random)"
    )
    ap.add_argument("--requests", type=int, default=120, help="requests for the overhead part (>= 100)")
    ap.add_argument("--file", type=Path, default=ROOT / "codedec" / "engine.py", help="a real source file")
    ap.add_argument("--typing-model", default="smollm2", help="model for the typing replay ('' skips it)")
    ap.add_argument("--keystrokes", type=int, default=300, help="characters re-typed in the replay")
    ap.add_argument("--start-line", type=int, default=None, help="first re-typed line (default: a third in)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="codedec-bench-") as d:
        tmp = Path(d)
        o = asyncio.run(bench_overhead(args.model, args.requests, args.file, tmp))
        print(f"server overhead ({o['model']}, {o['measured']} of {o['requests']} requests with a partial):")
        print(
            f"  overhead            p50 {o['overhead_ms']['p50']:7.2f} ms   p95 {o['overhead_ms']['p95']:7.2f} ms"
            "   (target p50 <= 10 ms)"
        )
        print(
            f"    of which prompt assembly (tokenize + budget, context/fim.py)"
            f" p50 {o['prompt_ms']['p50']:6.2f} ms   p95 {o['prompt_ms']['p95']:6.2f} ms"
        )
        print(
            f"    the rest (JSON-RPC, handler, queue, notify)"
            f"                p50 {o['protocol_ms']['p50']:6.2f} ms   p95 {o['protocol_ms']['p95']:6.2f} ms"
        )
        print(
            f"  client first partial p50 {o['first_partial_ms']['p50']:7.2f} ms   p95 {o['first_partial_ms']['p95']:7.2f} ms"
        )
        print(
            f"  engine first text    p50 {o['engine_first_text_ms']['p50']:7.2f} ms   p95 {o['engine_first_text_ms']['p95']:7.2f} ms"
        )
        off, on = prompt_memo_ratio(args.model, args.file)
        print(f"  build_prompt on {args.file.name}, per-line token-count memo off / on (same run):"
              f" p50 {off:.2f} / {on:.2f} ms = {off / on:.1f}x")
        if args.typing_model:
            n_lines = args.file.read_text().count("\n")
            start = args.start_line if args.start_line is not None else n_lines // 3
            t = asyncio.run(bench_typing(args.typing_model, args.keystrokes, args.file, start, tmp))
            print(
                f"typed-ahead replay ({t['model']}, {t['file']} from line {start + 1}, {t['keystrokes']} keystrokes,"
                f" {t['seconds']:.0f} s):"
            )
            print(
                f"  hit rate {100 * t['hit_rate']:.1f}%  ({t['cache_hits']} cache hits, {t['model_calls']} model calls,"
                f" of {t['requests_needing_a_suggestion']} requests needing a suggestion)"
            )


if __name__ == "__main__":
    main()
