"""Cross-file context (E10): tables from ``codedec eval repobench`` runs that compare context modes.

The runs themselves are ``codedec eval`` commands (their per-sample rows are the raw output); this
script only reads their ``samples.jsonl`` and prints, per configuration:

* EM and ES (0-100) over the records, and the paired difference against a reference configuration
  (records where one is right and the other wrong, both ways);
* the cross-file block: median tokens kept and the compression it achieved against the whole
  context (the ``context:truncate:/1`` row of the same record), median [p10..p90];
* latency: p50/p95 of the whole completion (the engine's time plus gathering and fitting the
  context), and the paired per-record ratio against the reference;
* LongCodeZip's own time: p50/p95 of its compression ms when it had to score (the query or the
  functions were new) and when every score came from its cache;
* gathering (service-gathered context only): p50 and max ms the service spent collecting chunks.

``--typing PACKAGE`` instead replays typing a function body of an installed package word by word
through one ``CompletionService`` per context mode (the editor's pipeline: the service gathers the
cross-file context itself), modes alternating per request, and prints per mode how much of each
prompt the KV cache already held (reused / prompt tokens), the context block's size and the
request's time — the cross-file block comes first in the prompt and must not break prefix reuse.

Usage (the commands of RESULTS.md "Cross-file context"):

    python benchmarks/bench_context.py runs/e10/records-rich runs/e10/records-click --reference context:truncate:/1
    python benchmarks/bench_context.py runs/e10/repo-rich runs/e10/repo-click --reference plain
    python benchmarks/bench_context.py --typing click --requests 40 --out benchmarks/raw/e10/typing.rows.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench_suffix import pct, spread


def rows_of(run: Path) -> list[dict]:
    path = run / "samples.jsonl"
    if not path.exists():
        path = run / "samples.jsonl.gz"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def latency(row: dict) -> float:
    """The completion's time including the context's: gathering and fitting/compressing the block
    (done before the engine starts, so not in the engine's ``total_ms``)."""
    ctx = row.get("context") or {}
    return row["total_ms"] + ctx.get("ms", 0.0) + ctx.get("gather_ms", 0.0)


def table(rows: list[dict], reference: str) -> list[str]:
    by = defaultdict(dict)
    for r in rows:
        by[r["config"]][(r.get("run"), r["task_id"])] = r
    ref = by.get(reference, {})
    whole = by.get("context:truncate:/1", {})
    out = [f"{'config':24} {'n':>4} {'EM':>6} {'ES':>6} {'EM +/- vs ref':>14} {'block tok':>9} "
           f"{'compression':>19} {'p50 ms':>7} {'p95 ms':>7} {'latency / ref':>19} {'zip ms scored p50/p95':>22} "
           f"{'cached p50/p95':>15} {'gather ms p50/max':>18}"]
    for config, recs in by.items():
        keys = sorted(recs)
        em = 100 * sum(bool(recs[k]["em"]) for k in keys) / len(keys)
        es = statistics.fmean(recs[k]["es"] for k in keys)
        win = sum(bool(recs[k]["em"]) and not ref[k]["em"] for k in keys if k in ref)
        loss = sum(not recs[k]["em"] and bool(ref[k]["em"]) for k in keys if k in ref)
        tokens = [recs[k].get("context", {}).get("tokens_out", 0) for k in keys]
        ratios = [whole[k]["context"]["tokens_out"] / recs[k]["context"]["tokens_out"] for k in keys
                  if k in whole and recs[k].get("context", {}).get("tokens_out") and whole[k].get("context")]
        lat = [latency(recs[k]) for k in keys]
        lat_ratio = [latency(recs[k]) / latency(ref[k]) for k in keys if k in ref and latency(ref[k])]
        scored = [recs[k]["context"]["zip_ms"] for k in keys if recs[k].get("context", {}).get("scored")]
        cached = [recs[k]["context"]["zip_ms"] for k in keys
                  if "zip_ms" in recs[k].get("context", {}) and not recs[k]["context"].get("scored")]
        zs = f"{pct(scored, .5):.0f} / {pct(scored, .95):.0f} (n={len(scored)})" if scored else "-"
        zc = f"{pct(cached, .5):.0f} / {pct(cached, .95):.0f} (n={len(cached)})" if cached else "-"
        gather = [recs[k]["context"]["gather_ms"] for k in keys if recs[k].get("context", {}).get("gather_ms")]
        zg = f"{pct(gather, .5):.0f} / {max(gather):.0f}" if gather else "-"
        out.append(f"{config:24} {len(keys):4d} {em:6.1f} {es:6.1f} {f'+{win}/-{loss}':>14} "
                   f"{statistics.median(tokens):9.0f} {spread(ratios) if ratios else '-':>19} {pct(lat, .5):7.0f} "
                   f"{pct(lat, .95):7.0f} {spread(lat_ratio):>19} {zs:>22} {zc:>15} {zg:>18}")
    return out


def typing(package: str, requests: int, modes: list[str], out: Path | None) -> None:
    import torch
    from bench_suffix import typing_session

    from codedec.engine import Engine
    from codedec.loading import load_model
    from codedec.service import CompletionRequest, CompletionService, ServerSettings

    loaded = load_model("smollm2")
    services = {m: CompletionService(Engine(loaded), threads=torch.get_num_threads()) for m in modes}
    rows = []
    for i, item in enumerate(typing_session(package, 0, requests)):
        order = modes if i % 2 == 0 else modes[::-1]
        for mode in order:
            req = CompletionRequest.from_settings(
                ServerSettings(context=mode), id=f"{mode}:{i}", doc=item["path"], prefix=item["prefix"],
                suffix=item["suffix"], single_line=item["single_line"], path=item["path"], max_tokens=16)
            res = services[mode].complete(req)
            st = res.stats
            rows.append({"mode": mode, "i": i, "id": item["id"], "prompt_tokens": st.get("prompt_tokens"),
                         "reused_tokens": st.get("reused_tokens"), "edit_rotated": st.get("edit_rotated"),
                         "total_ms": st.get("total_ms"), "service_ms": st.get("service_ms"),
                         "context": st.get("context"), "finish": res.finish_reason})
    for svc in services.values():
        svc.close()
    if out is not None:
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"typing a function of {package}: {len(rows) // len(modes)} requests per mode, SmolLM2 fp32, "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':10} {'block tok p50':>13} {'prompt tok p50':>14} {'reused / prompt (after the first)':>34} "
          f"{'service ms p50/p95':>19}")
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        later = mine[1:]
        reuse = [r["reused_tokens"] / r["prompt_tokens"] for r in later if r["prompt_tokens"]]
        block = [(r["context"] or {}).get("tokens_out", 0) for r in mine]
        ms = [r["service_ms"] for r in mine]
        print(f"{mode:10} {statistics.median(block):13.0f} {statistics.median(r['prompt_tokens'] for r in mine):14.0f} "
              f"{spread(reuse):>34} {pct(ms, .5):9.0f} / {pct(ms, .95):.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="codedec eval output directories (pooled)")
    ap.add_argument("--reference", default="context:truncate:/1", help="the configuration the others are paired with")
    ap.add_argument("--typing", metavar="PACKAGE", help="replay typing in an installed package instead")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--modes", default="none,truncate")
    ap.add_argument("--out", type=Path, default=None, help="--typing: per-request rows (JSONL)")
    args = ap.parse_args()
    if args.typing:
        typing(args.typing, args.requests, args.modes.split(","), args.out)
        return
    rows = []
    for run in args.runs:
        for r in rows_of(run):
            rows.append({**r, "run": run.name})
    for run in [*args.runs, None]:
        picked = [r for r in rows if run is None or r["run"] == run.name]
        print(f"== {'all runs pooled' if run is None else run}  (reference: {args.reference})")
        print("\n".join(table(picked, args.reference)))
        print()


if __name__ == "__main__":
    main()
