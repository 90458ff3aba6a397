"""The monitor's measured table (E13 item 6): invalid members judged by mypy, on two typed packages,
cold vs warm language server, quiet vs loaded machine.

1. Workspaces: fresh copies of two pip-installed, typed packages (default ``rich`` and ``click``,
   as installed in this environment) in a scratch directory, each with a ``pyproject.toml`` (the
   monitor's workspace root).
2. Cases (``codedec_eval.member_cases``): one-line statements whose first ``name.member`` access
   mypy can judge; the cursor is right after ``name.``, the completion is the rest of the line
   (greedy, single-line, the real file as prefix/suffix, through ``CompletionService`` as the
   editor's requests go).
3. Per case, three completions, each with its own document key (no KV reuse between them):
   ``plain``; ``cold`` — ``monitor`` with every language server shut down first, so the request
   starts the workspace's server itself (worse than the editor, which starts it when the file
   opens); ``warm`` — ``monitor`` again, the server now running. All of that quiet, then again
   ``loaded``: a CPU-bound process runs beside it (this machine has 2 cores).
4. Judged afterwards (quiet): mypy checks each file with the completed line in it
   (``codedec_eval.judge``); its ``attr-defined`` errors on that line are invalid members. Rates:
   invalid member accesses over the accesses written (``receiver.`` + completion), and completions
   whose member at the cursor is invalid. Also EM/ES against the real line, wall-clock latency per
   completion, decode ms/token, and what the monitor's report says happened at the cursor.

    .venv/bin/python benchmarks/bench_monitor_repos.py [--n 20] [--repos rich,click] \\
        [--out benchmarks/raw/e13/monitor_repos]

Writes ``<out>.rows.jsonl.gz`` (the cases, then one row per completion with its judgement) and
prints the table; ``--summarize ROWS`` prints the table of a finished run again.
No time budget per completion (the machine is slow: a budget would turn latency into empty
completions and leave nothing to judge); latency is reported instead.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_monitor import MEMBER  # a member access, as bench_monitor counts them
from codedec_eval.judge import Unparsable, member_errors
from codedec_eval.member_cases import MemberCase, member_cases

from codedec.complete import complete
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.monitor.client import close_all
from codedec.service import CompletionService
from codedec.settings import ServerSettings

IDENT = re.compile(r"[A-Za-z_]\w*")
CONDITIONS = ("plain", "cold", "warm")


def workspace(scratch: Path, name: str) -> Path:
    """A fresh copy of the installed package ``name`` in ``scratch/name`` (the workspace root)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not an installed package")
    src = Path(list(spec.submodule_search_locations)[0])
    root = scratch / name
    shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}-workspace"\n')
    return root


def hog() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def judge(case: MemberCase, completion: str, root: Path, cache: Path) -> dict:
    """mypy's verdict on the completed line."""
    written = f"{case.receiver}.{completion}"
    accesses = len(MEMBER.findall(written))
    name = IDENT.match(completion)
    try:
        errors = member_errors(case.path, case.prefix + completion + case.suffix, lines={case.line}, root=root,
                               cache_dir=cache)
    except Unparsable:
        return {"judged": False, "accesses": accesses, "invalid": 0, "cursor_invalid": False, "errors": []}
    names = [e.name for e in errors]
    return {"judged": True, "accesses": accesses, "invalid": len(errors),
            "cursor_invalid": bool(name) and name.group() in names, "errors": names}


def summarize(rows: list[dict]) -> list[str]:
    from rapidfuzz.fuzz import ratio

    head = (f"{'load':7s} {'config':6s} {'n':>3s} {'judged':>6s} {'accesses':>8s} {'invalid':>7s} {'rate':>6s} "
            f"{'cursor inv':>10s} {'EM':>5s} {'ES':>5s} {'p50 ms':>7s} {'p90 ms':>7s} {'x plain [p10..p90]':>17s} "
            f"{'ms/tok':>6s} "
            f"{'cursor answered/timed out':>26s}")
    out = [head]
    for load in ("quiet", "loaded"):
        for cond in CONDITIONS:
            rs = [r for r in rows if r["load"] == load and r["config"] == cond]
            if not rs:
                continue
            judged = [r for r in rs if r["judged"]]
            acc = sum(r["accesses"] for r in judged)
            inv = sum(r["invalid"] for r in judged)
            cur = sum(r["cursor_invalid"] for r in judged)
            em = statistics.fmean(r["completion"].strip() == r["target"].strip() for r in rs)
            es = statistics.fmean(ratio(r["completion"].strip(), r["target"].strip()) / 100 for r in rs)
            wall = sorted(r["wall_ms"] for r in rs)
            p90 = wall[min(len(wall) - 1, int(0.9 * len(wall)))]
            mst = statistics.median(r["ms_per_token"] for r in rs)
            at = [((r.get("constraints") or {}).get("monitor") or {}).get("cursor") for r in rs]
            cursor = "-" if cond == "plain" else f"{at.count('answered')}/{at.count('timed_out')}"
            plain = {r["id"]: r["wall_ms"] for r in rows if r["load"] == load and r["config"] == "plain"}
            ratios = sorted(r["wall_ms"] / plain[r["id"]] for r in rs if plain.get(r["id"]))
            paired = (f"{statistics.median(ratios):.2f} [{ratios[len(ratios) // 10]:.2f}..{ratios[9 * len(ratios) // 10]:.2f}]"
                      if ratios and cond != "plain" else "-")
            out.append(f"{load:7s} {cond:6s} {len(rs):3d} {len(judged):6d} {acc:8d} {inv:7d} "
                       f"{(inv / acc if acc else float('nan')):6.3f} {cur:>4d}/{len(judged):<5d} {em:5.2f} "
                       f"{es:5.3f} {statistics.median(wall):7.0f} {p90:7.0f} {paired:>17s} {mst:6.1f} {cursor:>26s}")
    out.append("rate: mypy attr-defined errors on the completed line / member accesses written (receiver. + "
               "completion); cursor inv: completions whose member at the cursor mypy rejects / judged; "
               "judged: completions that parse (mypy judges nothing in a broken line); x plain: median of the "
               "per-case latency ratios to plain under the same load [10th..90th percentile]")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--repos", default="rich,click", help="installed, typed packages (comma-separated)")
    ap.add_argument("--n", type=int, default=20, help="cases per package")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--loads", default="quiet,loaded")
    ap.add_argument("--out", default="runs/bench_monitor_repos", help="writes <out>.rows.jsonl.gz")
    ap.add_argument("--summarize", metavar="ROWS", default=None, help="print the table of a finished run's rows file")
    args = ap.parse_args()
    if args.summarize:
        with gzip.open(args.summarize, "rt", encoding="utf-8") as f:
            rows = [r for r in map(json.loads, f) if "case" not in r]
        print("\n".join(summarize(rows)))
        return
    torch.set_grad_enabled(False)

    scratch = Path(tempfile.mkdtemp(prefix="codedec-mgd-ws-"))
    cases: list[tuple[MemberCase, Path, Path]] = []
    for name in args.repos.split(","):
        root = workspace(scratch, name)
        cache = scratch / f"mypy-cache-{name}"
        t = time.perf_counter()
        found = member_cases(root / name, args.n, seed=args.seed, root=root, cache_dir=cache)
        print(f"{name}: {len(found)} cases mypy can judge ({time.perf_counter() - t:.0f} s)", flush=True)
        cases += [(c, root, cache) for c in found]

    service = CompletionService(Engine(load_model(args.model)))
    settings = {c: ServerSettings(decoding=() if c == "plain" else ("monitor",), max_tokens=args.max_tokens,
                                  time_budget_ms=None, max_prompt_tokens=args.max_prompt_tokens) for c in CONDITIONS}
    complete(service, "def f(x):\n    return x.", settings=settings["plain"], single_line=True, doc="\0warmup")
    rows: list[dict] = []
    try:
        for load in args.loads.split(","):
            beside = hog() if load == "loaded" else None
            try:
                for i, (case, _root, _cache) in enumerate(cases):
                    for cond in CONDITIONS:
                        if cond == "cold":
                            close_all()  # every language server gone: this request starts its workspace's
                        t = time.perf_counter()
                        c = complete(service, case.prefix, case.suffix, settings=settings[cond], single_line=True,
                                     path=case.path, doc=f"{load}:{cond}:{case.id}")
                        wall = (time.perf_counter() - t) * 1000
                        rows.append({"load": load, "config": cond, "id": case.id, "target": case.target,
                                     "completion": c.text, "raw_text": c.raw_text, "wall_ms": round(wall, 1),
                                     "ms_per_token": c.ms_per_token, "new_tokens": len(c.token_ids),
                                     "prompt_tokens": c.prompt_tokens, "finish_reason": c.finish_reason,
                                     "constraints": c.stats.get("constraints")})
                    last = rows[-3:]
                    print(f"[{load} {i + 1}/{len(cases)}] {case.id} target {case.target.strip()[:40]!r} | " +
                          " | ".join(f"{r['config']} {r['completion'].strip()[:30]!r} {r['wall_ms']:.0f} ms"
                                     for r in last), flush=True)
            finally:
                if beside is not None:
                    beside.kill()
                    beside.wait()
    finally:
        service.close()
        close_all()

    by_id = {c.id: (c, root, cache) for c, root, cache in cases}
    t = time.perf_counter()
    for r in rows:  # judged quiet, after all generation
        case, root, cache = by_id[r["id"]]
        r.update(judge(case, r["completion"], root, cache))
    print(f"judged {len(rows)} completions with mypy in {time.perf_counter() - t:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(f"{out}.rows.jsonl.gz", "wt", encoding="utf-8") as f:
        for c, _root, _cache in cases:
            f.write(json.dumps({"case": c.as_dict() | {"prefix": c.prefix[-300:], "suffix": c.suffix[:300]}}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for line in summarize(rows):
        print(line)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
