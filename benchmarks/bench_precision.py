"""Quality of two ``codedec eval`` runs that differ only in ``--precision`` (E14: q4 against fp32).

Reads each run's ``samples.jsonl`` (``codedec eval ... --out DIR``), keeps the samples both runs
finished (same task, repeat and configuration — a run stopped early still counts on what it did),
and prints per configuration: problems, pass@1 (or exact match) of each run, problems one passes
and the other fails, and how many completions are identical. Latency is not compared here: the
runs may have shared the machine unevenly (``bench_vs_llamacpp.py`` measures speed side by side).

    .venv/bin/python benchmarks/bench_precision.py runs/e14/he-fp32 runs/e14/he-q4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(run: Path) -> dict[tuple, dict]:
    rows = {}
    with open(run / "samples.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows[(r.get("config", ""), r["task_id"], r.get("repeat", 0))] = r
    return rows


def good(r: dict) -> bool:
    if "passed" in r:
        return bool(r["passed"])
    return bool(r.get("exact_match", r.get("em", False)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", type=Path, help="the reference run (e.g. fp32)")
    ap.add_argument("other", type=Path, help="the run compared with it (e.g. q4)")
    args = ap.parse_args()
    a, b = load(args.base), load(args.other)
    common = sorted(set(a) & set(b))
    print(f"# {args.base} ({len(a)} samples) vs {args.other} ({len(b)} samples): {len(common)} in both")
    print("config      n   base pass@1   other pass@1   fixed  broken   identical completions")
    for config in sorted({k[0] for k in common}):
        keys = [k for k in common if k[0] == config]
        pa = sum(good(a[k]) for k in keys)
        pb = sum(good(b[k]) for k in keys)
        fixed = sum(good(b[k]) and not good(a[k]) for k in keys)
        broken = sum(good(a[k]) and not good(b[k]) for k in keys)
        same = sum(a[k].get("completion") == b[k].get("completion") for k in keys)
        print(f"{config or 'plain':10s} {len(keys):3d}   {100 * pa / len(keys):6.1f} %      {100 * pb / len(keys):6.1f} %"
              f"      {fixed:3d}    {broken:3d}      {same}/{len(keys)}")


if __name__ == "__main__":
    main()
