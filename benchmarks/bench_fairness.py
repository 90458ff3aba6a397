"""Fairness (issue E11): a 2-line file's completion while a cold 12 KB file is being prefilled.

In one process with the embedded model: a completion at the end of a real ~12 KB file (cold
cache, so its prompt is prefilled chunk by chunk) is submitted, and right after it one for a
2-line file. With preemption (the default) the short request runs between the long prompt's
chunks; without it (``waiting()`` reporting nothing) it waits for the whole prefill and decode.
Conditions alternate per repetition, fresh documents each time, no time budget (pure waiting).
Prints the latency (submit to result) of both requests and the paired ratios.

    .venv/bin/python benchmarks/bench_fairness.py [--reps 5] [--model smollm2]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

from codedec.engine import Engine
from codedec.loading import load_model
from codedec.service import CompletionRequest, CompletionService

SHORT = "def add(a, b):\n    return"


def twelve_kb_file() -> Path:
    root = Path(importlib.util.find_spec("rich").submodule_search_locations[0])
    files = sorted(root.rglob("*.py"), key=lambda p: abs(p.stat().st_size - 12_000))
    return files[0]


def one(service: CompletionService, text: str, tag: str, fair: bool) -> tuple[float, float, int]:
    real = service._queue.waiting
    if not fair:
        service._queue.waiting = lambda: 0
    try:
        t0 = time.perf_counter()
        long_fut = service.submit(CompletionRequest(id=f"long-{tag}", doc=f"long-{tag}", prefix=text,
                                                    max_tokens=16, time_budget_ms=None))
        short_fut = service.submit(CompletionRequest(id=f"short-{tag}", doc=f"short-{tag}", prefix=SHORT,
                                                     max_tokens=16, time_budget_ms=None))
        short = short_fut.result(600)
        t_short = time.perf_counter() - t0
        long = long_fut.result(600)
        t_long = time.perf_counter() - t0
        assert short.error is None and long.error is None
        return t_short * 1e3, t_long * 1e3, long.stats["prompt_tokens"]
    finally:
        service._queue.waiting = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    path = twelve_kb_file()
    text = path.read_text()
    service = CompletionService(Engine(load_model(args.model)), threads=2)
    try:
        service.complete(CompletionRequest(id="warm", doc="warm", prefix=SHORT, max_tokens=4), 600)
        res = {True: [], False: []}
        for r in range(args.reps):
            for fair in ((True, False) if r % 2 == 0 else (False, True)):
                res[fair].append(one(service, text, f"{r}-{fair}", fair))
    finally:
        service.close()
    print(f"long file: {path.name} ({len(text)} chars, {res[True][0][2]} prompt tokens), short: 2 lines; "
          f"{args.reps} reps")
    for fair in (False, True):
        name = "preemption" if fair else "no preemption"
        print(f"{name:>14}: short p50 {statistics.median(x[0] for x in res[fair]):.0f} ms, "
              f"long p50 {statistics.median(x[1] for x in res[fair]):.0f} ms")
    short_ratio = [off[0] / on[0] for on, off in zip(res[True], res[False], strict=True)]
    long_ratio = [on[1] / off[1] for on, off in zip(res[True], res[False], strict=True)]
    print(f"short request waits {statistics.median(short_ratio):.1f}x less with preemption "
          f"[{min(short_ratio):.1f}..{max(short_ratio):.1f}]; the long one takes "
          f"{statistics.median(long_ratio):.2f}x as long [{min(long_ratio):.2f}..{max(long_ratio):.2f}]")


if __name__ == "__main__":
    main()
