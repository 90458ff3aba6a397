"""The eval sandbox (issue E11): the hostile-suite table, and what bubblewrap costs per program.

1. The hostile suite (:mod:`codedec_eval.hostile`): each attack, how the sandbox scored it,
   whether the host-side checks held.
2. The 164 canonical HumanEval solutions, each run under bubblewrap and under the fallback
   isolation (namespaces, uid, limits; no filesystem confinement) back to back, in
   alternating order: pass counts and the median of the paired per-program wall-time ratios
   (bubblewrap / fallback) with their 10th-90th percentile spread.

    .venv/bin/python benchmarks/bench_sandbox.py [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import codedec_eval.sandbox as sandbox
from codedec_eval import hostile
from codedec_eval.humaneval import load_humaneval
from codedec_eval.isolation import probe_isolation


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N HumanEval problems")
    args = ap.parse_args()
    confined = probe_isolation(sys.executable)
    if not confined.bwrap:
        print(f"bubblewrap does not work here: {confined.describe()}")
        return 1
    print("## hostile suite")
    status = hostile.main()
    fallback = dataclasses.replace(confined, bwrap=None, read_caps=True)
    print(f"\n## canonical HumanEval solutions\nconfined: {confined.describe()}\nfallback: {fallback.describe()}")
    passed = {"bwrap": 0, "fallback": 0}
    ratios, walls = [], {"bwrap": [], "fallback": []}
    problems = load_humaneval()[: args.limit]
    for i, p in enumerate(problems):
        program = p.program(p.canonical_solution)
        order = [("bwrap", confined), ("fallback", fallback)]
        if i % 2:
            order.reverse()
        ms = {}
        for name, iso in order:
            sandbox.probe_isolation = lambda python, iso=iso: iso
            r = sandbox.run_program(program, timeout_s=20)
            passed[name] += r.passed
            ms[name] = r.wall_ms
            walls[name].append(r.wall_ms)
        ratios.append(ms["bwrap"] / ms["fallback"])
    n = len(problems)
    print(f"passed: bubblewrap {passed['bwrap']}/{n}, fallback {passed['fallback']}/{n}")
    for name, xs in walls.items():
        print(f"wall ms {name}: p50 {statistics.median(xs):.0f}  p90 {quantile(xs, 0.9):.0f}")
    print(f"paired ratio bubblewrap/fallback: median {statistics.median(ratios):.2f} "
          f"(p10 {quantile(ratios, 0.1):.2f}, p90 {quantile(ratios, 0.9):.2f}, n={n})")
    return status or int(passed["bwrap"] != n)


if __name__ == "__main__":
    raise SystemExit(main())
