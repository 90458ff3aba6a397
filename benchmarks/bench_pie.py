"""PIE benchmark: edit-aware KV reuse vs full recompute, naive shift and prefix-only reuse, one run.

For each edit-simulation record (``codedec eval build-repobench --edit-sim``):
1. build the RepoBench prompt of the text *before* the edit and of the text after it (same
   cross-file context, same budget), encode the "before" prompt and let the model complete it
   (``--prev-tokens`` greedy tokens: the previous completion stays at the end of the cache);
2. from a copy of that cache, complete the "after" prompt four ways, greedily, until the first
   code line is done:
   (i) full recompute (empty cache), (ii) PIE (``codedec.pie.apply_edit``), (iii) naive shift
   (PIE without re-rotating the moved keys: stale positions), (iv) prefix-only reuse (the
   engine's longest-common-prefix reuse);
3. score the first code line against ``next_line`` (RepoBench EM / ES), count the tokens each
   method runs through the model before the first new token, and time to first token (from the
   start of the request, including ``apply_edit``, excluding the copy of the cache).

Prints one table with ratios to full recompute; ``--json`` writes the per-record rows.
The machine is shared and noisy: read the ratios, and run with ``--threads 1`` on a busy 2-core box
(OpenMP threads waiting for a busy core make a 2-thread forward several times slower).

    .venv/bin/python benchmarks/bench_pie.py --data /tmp/rb-edit.jsonl [--n 12] [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time

import torch
from codedec_eval.metrics import edit_similarity, exact_match
from codedec_eval.repobench import build_prompt, first_code_line, load_repobench

from codedec.cache import KVCache
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.pie import apply_edit
from codedec.sampling import SamplingParams

METHODS = ("full", "pie", "naive", "prefix")
LABELS = {"full": "(i) full recompute", "pie": "(ii) PIE", "naive": "(iii) naive shift", "prefix": "(iv) prefix-only"}


def prompts(record, count, budget: int) -> tuple[str, str] | None:
    """(before, after) prompt texts sharing their cross-file part; None when the in-file part of
    the "after" prompt had to be trimmed (the two would then differ in more than the edit)."""
    after = build_prompt(record, count, budget)
    tail = record.cropped_code + "\n"
    if not after.endswith(tail):
        return None
    before = after[: len(after) - len(tail)] + record.edit["before_code"] + "\n"
    return re.sub(r"\n{4,}", "\n\n", before), after


def code_line_done(text: str) -> bool:
    """Whether ``text`` holds a finished line that ``first_code_line`` would pick as code (the same
    skipping rules: blank lines, ``#`` comments, docstring text)."""
    in_doc: str | None = None
    for line in text.lstrip("\n").split("\n")[:-1]:  # finished lines only
        s = line.strip()
        if not s:
            continue
        if in_doc is not None:
            in_doc = None if s.endswith(in_doc) else in_doc
            continue
        quote = next((q for q in ('"""', "'''") if s.startswith(q)), None)
        if quote is not None:
            in_doc = None if len(s) >= 6 and s.endswith(quote) else quote
            continue
        if not s.startswith("#"):
            return True
    return False


def complete(engine: Engine, ids: list[int], cache: KVCache, params: SamplingParams,
             t0: float) -> tuple[str, float, int]:
    """Greedy completion until the first code line is finished: (text, ms from t0 to the first
    token, prompt tokens the engine reused from the cache)."""
    text, ttft, reused = "", float("nan"), 0
    gen = engine.generate(ids, params, cache=cache)
    for step in gen:
        reused = step.metrics.reused_tokens
        if step.index == 0 and step.token_ids:
            ttft = (time.perf_counter() - t0) * 1000
        text += step.text
        if code_line_done(text):
            gen.close()  # the engine leaves the cache consistent
            break
    return text, ttft, reused


def run_method(method: str, engine: Engine, old: KVCache, after_ids: list[int], preset: dict,
               params: SamplingParams, args) -> dict:
    if method == "full":
        cache = engine.cache
        cache.reset()
    else:
        cache = old.fork()
    t0 = time.perf_counter()
    encoded, fallback = 0, None
    if method in ("pie", "naive"):
        res = apply_edit(engine.model, cache, after_ids, preset, max_edit_fraction=args.max_edit_fraction,
                         rerotate=method == "pie")
        encoded, fallback = res.encoded, res.fallback_reason
    text, ttft, reused = complete(engine, after_ids, cache, params, t0)
    encoded += len(after_ids) - reused  # what the engine's own prefill encoded
    return {"text": text, "pred": first_code_line(text), "ttft_ms": ttft, "encoded": encoded, "fallback": fallback}


def table(rows: list[dict], title: str) -> None:
    tokens = sorted(r["prompt_tokens"] for r in rows)
    print(f"\n{title}: {len(rows)} records, prompt tokens median {statistics.median(tokens):.0f} "
          f"(min {tokens[0]}, max {tokens[-1]})")
    full_enc = sum(r["full"]["encoded"] for r in rows)
    full_ttft = statistics.median(r["full"]["ttft_ms"] for r in rows)
    print(f"{'method':<22}{'EM':>7}{'ES':>7}{'=full':>7}{'re-encoded':>12}{'vs full':>9}{'TTFT ms':>10}"
          f"{'vs full':>9}{'fallbacks':>11}")
    for m in METHODS:
        em = 100 * statistics.mean(exact_match(r[m]["pred"], r["next_line"]) for r in rows)
        es = statistics.mean(edit_similarity(r[m]["pred"], r["next_line"]) for r in rows)
        same = 100 * statistics.mean(r[m]["pred"] == r["full"]["pred"] for r in rows)
        enc = sum(r[m]["encoded"] for r in rows)
        ttft = statistics.median(r[m]["ttft_ms"] for r in rows)
        falls = sum(r[m]["fallback"] is not None for r in rows)
        print(f"{LABELS[m]:<22}{em:>7.1f}{es:>7.1f}{same:>7.0f}{enc / len(rows):>12.1f}{enc / full_enc:>9.3f}"
              f"{ttft:>10.0f}{ttft / full_ttft:>9.3f}{falls:>11}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/rb-edit.jsonl", help="edit-sim RepoBench JSONL")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=12, help="records to run (those with a usable edit)")
    ap.add_argument("--min-prompt-tokens", type=int, default=0, help="skip shorter prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--prev-tokens", type=int, default=8, help="tokens of the previous completion left in the cache")
    ap.add_argument("--max-edit-fraction", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long", type=int, default=1500, help="also tabulate prompts of at least this many tokens")
    ap.add_argument("--json", help="write per-record rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    loaded = load_model(args.model)
    engine = Engine(loaded)
    tok = loaded.tokenizer

    def count(s: str) -> int:
        return len(tok.encode(s, add_special_tokens=False, verbose=False))

    budget = int(loaded.preset.get("context_tokens") or 2048) - args.max_new_tokens
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    list(engine.generate(tok.encode("def warm_up(x):\n    return", add_special_tokens=False), SamplingParams(max_new_tokens=2)))

    rows, skipped = [], 0
    for record in load_repobench(args.data):
        if len(rows) >= args.n:
            break
        pair = prompts(record, count, budget) if record.edit else None
        if pair is None:
            skipped += 1
            continue
        before_ids = tok.encode(pair[0], add_special_tokens=False)
        after_ids = tok.encode(pair[1], add_special_tokens=False)
        if len(after_ids) < args.min_prompt_tokens:
            skipped += 1
            continue
        old = engine.cache
        old.reset()
        list(engine.generate(before_ids, SamplingParams(max_new_tokens=args.prev_tokens)))  # the previous request
        old = old.fork()
        row = {"file": record.file_path, "kind": record.edit["kind"], "prompt_tokens": len(after_ids),
               "next_line": record.next_line}
        order = METHODS[len(rows) % 4 :] + METHODS[: len(rows) % 4]  # rotate the order: spread machine drift
        for method in order:
            row[method] = run_method(method, engine, old, after_ids, loaded.preset, params, args)
        rows.append(row)
        print(f"[{len(rows)}/{args.n}] {record.file_path} {row['kind']} {len(after_ids)} tok: "
              + " ".join(f"{m}={row[m]['ttft_ms']:.0f}ms/{row[m]['encoded']}" for m in METHODS), file=sys.stderr)

    if not rows:
        sys.exit("no usable records")
    print(f"model={loaded.name} records={len(rows)} (skipped {skipped}) threads={args.threads} "
          f"max_new_tokens={args.max_new_tokens}; the machine is shared and loaded: compare ratios")
    table(rows, "all records")
    long = [r for r in rows if r["prompt_tokens"] >= args.long]
    if long and len(long) < len(rows):
        table(long, f"prompts >= {args.long} tokens")
    print("EM/ES: RepoBench next-line metrics (%); =full: % of records whose line equals full recompute's; "
          "re-encoded: mean tokens run through the model before the first new token; TTFT: median.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
