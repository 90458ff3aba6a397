"""Monitor (MGD) benchmark: member names that do not exist, plain vs ``monitor``.

1. Cases: RepoBench-style next-line records built from a real repository
   (``codedec_eval.build_repobench.build_records``; default: the installed ``jedi`` package),
   kept when the target line dereferences the cross-file symbol it uses (``sym.attr``).
2. Each configuration completes the line (greedy, single-line mode) from the RepoBench prompt
   — by default from right after ``sym.`` in the target line (``--cursor dot``: the member name
   is what the model writes; ``--cursor line`` generates the whole line);
   the monitor sees the real file (its path, the text before and after the line), as an editor
   integration would give it, and asks a warm jedi-language-server started once.
3. Scores: exact match and edit similarity against the target line; for every ``a.b`` in the
   generated line whose receiver jedi can complete (in the file with the line inserted), whether
   ``b`` is among jedi's names — the rate of non-existent members (target: halved); the decode
   ms/token of each configuration and the monitor's own time per completion (its overhead,
   including the waits for the language server). Independently, mypy checks the file with the
   generated line in it (``codedec_eval.judge``): its ``attr-defined`` errors on that line over
   the line's member accesses — a judge that is not the tool the monitor asks.

    .venv/bin/python benchmarks/bench_monitor.py [--repo DIR] [--n 16] [--budget-ms 150]

The machine is shared: times are indicative; compare rates.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from codedec_eval.judge import Unparsable, member_errors
from codedec_eval.judge import available as judge_available
from timed import Timed

from codedec.context.fim import build_prompt as fim_prompt
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.monitor import MonitorClient
from codedec.prepare import healing_chain
from codedec.processors.monitor import MonitorConfig, MonitorProcessor
from codedec.sampling import SamplingParams

MEMBER = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


def cases(repo: Path, n: int, seed: int) -> list[dict]:
    from codedec_eval.build_repobench import build_records

    out = []
    for row in build_records(repo, 40 * n, seed=seed):
        sym = row.get("used_symbol") or (row.get("extra") or {}).get("used_symbol")
        line = row["next_line"]
        if sym and re.search(rf"\b{re.escape(sym)}\.[A-Za-z_]", line):
            out.append(row)
        if len(out) >= n:
            break
    return out


def missing_members(path: Path, before: str, line: str, after: str, root: Path) -> tuple[int, int]:
    """(member accesses jedi can check, of which non-existent) in the generated ``line``."""
    import jedi

    code = before + line + "\n" + after
    row = before.count("\n") + 1
    project = jedi.Project(root)
    checked = missing = 0
    for m in MEMBER.finditer(line):
        col = m.start(2)
        try:
            names = {c.name for c in jedi.Script(code, path=path, project=project).complete(row, col)}
        except Exception:  # noqa: BLE001 - jedi gives up on some code: unchecked
            continue
        if not names:
            continue
        checked += 1
        missing += m.group(2) not in names
    return checked, missing


def main() -> None:
    from codedec_eval.repobench import build_prompt, record_from_dict
    from rapidfuzz.fuzz import ratio

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--repo", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-ms", type=float, default=150.0)
    ap.add_argument("--max-prompt-tokens", type=int, default=768)
    ap.add_argument("--verbose", action="store_true", help="print each target and completion")
    ap.add_argument("--cursor", choices=("dot", "line"), default="dot",
                    help="dot: the cursor is right after `sym.` in the target line (the member name is what is "
                         "generated); line: the whole line is generated")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    import jedi

    repo = Path(args.repo).resolve() if args.repo else Path(jedi.__file__).parent
    rows = cases(repo, args.n, args.seed)
    print(f"{len(rows)} cases from {repo} whose target line dereferences a cross-file symbol")
    engine = Engine(load_model(args.model))
    client = MonitorClient(repo)
    t = time.perf_counter()
    if not client.start(wait=True):
        raise SystemExit(f"the language server did not start in {repo}: the comparison would be plain vs plain")
    print(f"language server ready in {time.perf_counter() - t:.1f} s")

    stats = {c: {"em": 0, "es": 0.0, "checked": 0, "missing": 0, "ms_tok": [], "proc_ms": [], "lines": [],
                 "accesses": 0, "mypy_invalid": 0, "unparsable": 0} for c in ("plain", "monitor")}
    cache_dir = Path(tempfile.mkdtemp(prefix="codedec-mypy-"))
    for row in rows:
        record = record_from_dict(row)
        text = build_prompt(record, lambda s: len(engine.tokenizer.encode(s)), args.max_prompt_tokens)
        sym = row.get("used_symbol") or row["extra"]["used_symbol"]
        cut = re.search(rf"\b{re.escape(sym)}\.", row["next_line"]).end() if args.cursor == "dot" else 0
        line_prefix = row["next_line"][:cut]
        prompt = fim_prompt(engine.preset, engine.tokenizer, text + line_prefix, "",
                            max_tokens=args.max_prompt_tokens + 64)
        lines = row["all_code"].split("\n")
        line_no = row.get("line_no") or row["extra"]["line_no"]
        before_doc = "\n".join(lines[: line_no - 1]) + "\n" + line_prefix
        after_doc = "\n".join(lines[line_no:])
        heal = prompt.heal_text
        before = before_doc[: len(before_doc) - len(heal)] if heal and before_doc.endswith(heal) else before_doc
        path = repo / row["file_path"]
        for config in ("plain", "monitor"):  # same prompt twice: the second run reuses the cache
            st = stats[config]
            processors = []
            if config == "monitor":
                processors = [Timed(MonitorProcessor(engine.vocab, engine.stop_ids, before, "\n" + after_doc, str(path),
                                                     MonitorConfig(budget_ms=args.budget_ms), client=client))]
            params = SamplingParams(max_new_tokens=48, single_line=True, skip_text=heal)
            steps = list(engine.generate(prompt.ids, params, healing_chain(engine.vocab, heal, processors)))
            st["ms_tok"].append(steps[-1].metrics.ms_per_token)
            if processors:
                st["proc_ms"].append(sum(processors[0].times) * 1000)
            line = line_prefix + "".join(s.text for s in steps).split("\n")[0]
            target = row["next_line"]
            st["em"] += line.strip() == target.strip()
            st["es"] += ratio(line.strip(), target.strip()) / 100
            doc_before = before_doc[: len(before_doc) - len(line_prefix)]
            c, m = missing_members(path, doc_before, line, after_doc, repo)
            st["checked"] += c
            st["missing"] += m
            if judge_available():  # the independent judge: mypy's attr-defined on the generated line
                row_no = doc_before.count("\n") + 1
                try:
                    errors = member_errors(path, doc_before + line + "\n" + after_doc, lines={row_no}, root=repo,
                                           cache_dir=cache_dir)
                    st["accesses"] += len(MEMBER.findall(line))
                    st["mypy_invalid"] += len(errors)
                except Unparsable:  # the generated line broke the syntax: nothing to judge
                    st["unparsable"] += 1
            st["lines"].append(line)
        if args.verbose:
            print(f"  target : {row['next_line'].strip()}\n  plain  : {stats['plain']['lines'][-1].strip()}\n"
                  f"  monitor: {stats['monitor']['lines'][-1].strip()}")
    n = max(len(rows), 1)
    print(f"{'config':9s} {'EM':>5s} {'ES':>6s} {'members':>8s} {'missing':>8s} {'rate':>6s} {'decode ms/tok':>14s} "
          f"{'monitor ms/completion':>22s} {'accesses':>9s} {'mypy invalid':>13s} {'mypy rate':>10s} "
          f"{'unparsable':>11s}")
    for config, st in stats.items():
        rate = st["missing"] / st["checked"] if st["checked"] else 0.0
        proc = statistics.mean(st["proc_ms"]) if st["proc_ms"] else 0.0
        mrate = st["mypy_invalid"] / st["accesses"] if st["accesses"] else float("nan")
        print(f"{config:9s} {st['em'] / n:5.2f} {st['es'] / n:6.3f} {st['checked']:8d} {st['missing']:8d} {rate:6.3f} "
              f"{statistics.median(st['ms_tok']):14.1f} {proc:22.1f} {st['accesses']:9d} {st['mypy_invalid']:13d} "
              f"{mrate:10.3f} {st['unparsable']:11d}")
    print("members/missing/rate: judged by jedi (the monitor's own source); accesses/mypy invalid/mypy rate: "
          "mypy attr-defined errors on the generated line (eval/judge.py), an independent judge")
    client.close()


if __name__ == "__main__":
    main()
