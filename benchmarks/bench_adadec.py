"""AdaDec against greedy on the eval tasks: quality, pauses and latency from one `codedec eval` run.

Each benchmark is one run of ``codedec eval`` with the three configurations interleaved
(plain greedy; ``adadec``; ``adadec,grammar,rpg``), per-sample rows in ``samples.jsonl``:

    .venv/bin/codedec eval humaneval-infilling --split single-line --limit 200 \\
        --decoding ";adadec;adadec,grammar,rpg" --out runs/e9/infill-single
    .venv/bin/python benchmarks/bench_adadec.py runs/e9/infill-single

Printed per configuration: the task's quality numbers (from ``summary.json``), the share of decode
steps that paused (AdaDec's lookahead), completion latency p50/p95 as measured, the median of
paired per-sample ratios against plain (with the interquartile range) of the latency and of the
time after the first token, mean new tokens, and the median time per token after the first. Why both: the eval runner lets a configuration reuse the KV cache of
the prompt an earlier configuration ran (plain runs each problem first and pays its prefill; the
others find it cached: see ``mean reused``), which flatters the later configurations' latency; the
time after the first token carries no prefill, so its ratio is the fair one for the decode cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{pct(xs, .25):.2f}..{pct(xs, .75):.2f}]" if xs else "-"


def report(run: Path) -> str:
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    by: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for r in rows:
        by[r["config"]][(r["task_id"], r["repeat"])] = r
    configs = list(by)
    base = by[configs[0]]
    common = sorted(set.intersection(*(set(v) for v in by.values())))
    lines = [f"{run}: {len(common)} samples in every configuration"
             + ("" if summary else " (no summary.json: the run did not finish; quality from the rows)")]
    head = (f"{'config':22} {'quality':32} {'paused %':>8} {'lat p50':>8} {'lat p95':>8} "
            f"{'lat ratio vs plain':>20} {'after-1st-token ratio':>22} {'mean reused':>11} {'mean new tok':>12} "
            f"{'ms/tok after 1st p50':>20}")
    lines.append(head)
    for c in configs:
        mine = [by[c][k] for k in common]
        s = summary.get("configs", {}).get(c, {})
        if s and len(common) == s.get("n"):
            quality = ", ".join(f"{k} {v:.1f}" for k, v in s["quality"].items())
        else:
            passed = [r.get("passed") for r in mine if r.get("passed") is not None]
            em = [r.get("exact_match") for r in mine if r.get("exact_match") is not None]
            quality = ", ".join(x for x in (
                f"pass@1 {100 * sum(passed) / len(passed):.1f}" if passed else "",
                f"exact_match {100 * sum(em) / len(em):.1f}" if em else "",
                *(f"{m} {statistics.mean(r[m] for r in mine):.1f}" for m in ("es", "edit_sim") if mine and m in mine[0]),
            ) if x)
        stats = [r["strategy_stats"] for r in mine if r.get("strategy_stats")]
        steps = sum(st.get("steps", 0) for st in stats)
        paused = 100.0 * sum(st.get("paused", 0) for st in stats) / steps if steps else None
        lat = [r["total_ms"] for r in mine]
        ratio = [by[c][k]["total_ms"] / base[k]["total_ms"] for k in common if base[k]["total_ms"]]
        after = [(by[c][k]["total_ms"] - by[c][k]["ttft_ms"]) / (base[k]["total_ms"] - base[k]["ttft_ms"])
                 for k in common if base[k]["total_ms"] - base[k]["ttft_ms"] > 0
                 and by[c][k]["total_ms"] - by[c][k]["ttft_ms"] > 0]
        reused = statistics.mean(r.get("reused_tokens") or 0 for r in mine)
        new_tokens = statistics.mean(r["new_tokens"] for r in mine)
        per_token = [(r["total_ms"] - r["ttft_ms"]) / (r["new_tokens"] - 1) for r in mine if r["new_tokens"] > 1]
        lines.append(f"{c:22} {quality:32} {paused if paused is None else round(paused, 1)!s:>8} "
                     f"{pct(lat, .5):8.0f} {pct(lat, .95):8.0f} {spread(ratio):>20} {spread(after):>22} {reused:11.1f} "
                     f"{new_tokens:12.1f} {pct(per_token, .5):20.0f}")
    for c in configs[1:]:
        fixed = sum(1 for k in common if by[c][k].get("passed") and base[k].get("passed") is False)
        broke = sum(1 for k in common if by[c][k].get("passed") is False and base[k].get("passed"))
        same = sum(1 for k in common if by[c][k]["completion"] == base[k]["completion"])
        lines.append(f"{c} vs {configs[0]}: passes {fixed} that {configs[0]} fails, fails {broke} that it passes; "
                     f"{same} of {len(common)} completions identical")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="codedec eval --out directories")
    args = ap.parse_args()
    print("\n\n".join(report(r) for r in args.runs))


if __name__ == "__main__":
    main()
