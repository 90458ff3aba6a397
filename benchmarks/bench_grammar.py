"""Grammar benchmark: syntax errors introduced by infilling completions, plain vs ``grammar``.

For HumanEval single-line and multi-line infilling problems (a small, evenly spread sample), each
configuration completes the middle with the embedded model (greedy, the eval harness's settings:
single-line mode and 64 tokens, or 128 tokens multi-line), the middle is cut as the harness cuts
it (``infill_middle``), and we count:

- ``worse``: completions for which prefix + middle + suffix has more tree-sitter ERROR/MISSING
  nodes than prefix + suffix alone (target: grammar <= 1/10 of plain);
- ``pass``: the problem's tests pass (sandboxed; target: grammar not lower);
- the grammar processor's own time per token (its call on a [1, V] row + advance, p50 / p90),
  next to the decode ms/token; and how many requests fell back to no constraint.

    .venv/bin/python benchmarks/bench_grammar.py [--single 12] [--multi 8] [--configs "plain;grammar"]
    .venv/bin/python benchmarks/bench_grammar.py --overhead codedec/engine.py   # per-token cost of the three
    .venv/bin/python benchmarks/bench_grammar.py --score runs/a/samples.jsonl runs/b/samples.jsonl

``--score`` rates finished ``codedec eval humaneval-infilling`` runs instead of generating: the
same ``worse`` and ``pass`` counts per configuration, over the problems every listed run has (so
a plain baseline run and a ``--decoding grammar`` run of the same problems compare directly).

The machine is shared: the ms are indicative, the rates are what we compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from timed import Timed

from codedec.context.fim import build_prompt
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.prepare import healing_chain
from codedec.processors.cursor import _parser
from codedec.processors.grammar import GrammarConfig, GrammarProcessor
from codedec.sampling import SamplingParams


def error_nodes(code: str) -> int:
    """ERROR and MISSING nodes in tree-sitter's parse of ``code``."""
    tree = _parser().parse(code.encode("utf-8"))
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        if node.has_error:
            stack.extend(node.children)
    return count


def complete_one(engine: Engine, problem, single_line: bool, use_grammar: bool) -> tuple[str, list[float], bool]:
    """(text, per-token processor seconds, whether the grammar constrained) for one problem."""
    prompt = build_prompt(engine.preset, engine.tokenizer, problem.prompt, problem.suffix)
    heal = prompt.heal_text
    before = problem.prompt[: len(problem.prompt) - len(heal)] if heal and problem.prompt.endswith(heal) else problem.prompt
    processors, timed, active = [], None, False
    if use_grammar:
        proc = GrammarProcessor(engine.vocab, engine.stop_ids, engine.tokenizer, before, problem.suffix,
                                GrammarConfig(single_line=single_line, max_new_tokens=64 if single_line else 128))
        active = proc.active
        timed = Timed(proc)
        processors = [timed]
    params = SamplingParams(max_new_tokens=64 if single_line else 128, single_line=single_line, skip_text=heal)
    steps = list(engine.generate(prompt.ids, params, healing_chain(engine.vocab, heal, processors)))
    return "".join(s.text for s in steps), (timed.times if timed else []), active


def overhead(engine: Engine, path: str, n_tokens: int) -> None:
    """Per-token cost of rpg, grammar and monitor (a warm jedi-language-server), each and together,
    replaying the tokens of ``path`` (from its middle) as if they were generated."""
    import numpy as np

    from codedec.monitor import MonitorClient
    from codedec.processors.monitor import MonitorProcessor
    from codedec.processors.rpg import RPGProcessor

    text = open(path, encoding="utf-8").read()
    cut = text.find("\n", len(text) // 3) + 1
    prefix, rest = text[:cut], text[cut:]
    ids = engine.tokenizer.encode(rest, add_special_tokens=False)[:n_tokens]
    client = MonitorClient(os.path.dirname(os.path.abspath(path)))
    client.start(wait=True)
    procs = {
        "rpg": RPGProcessor(engine.vocab, engine.stop_ids),
        "grammar": GrammarProcessor(engine.vocab, engine.stop_ids, engine.tokenizer, prefix, ""),
        "monitor": MonitorProcessor(engine.vocab, engine.stop_ids, prefix, "", path, client=client),
    }
    times = {k: [] for k in procs}
    base = torch.randn(1, len(engine.vocab))
    for i in ids:
        row = base.clone()
        row[0, i] = float(base.max()) + 5.0  # a model that predicts the replayed token
        for k, proc in procs.items():
            t = time.perf_counter()
            proc(row)
            proc.advance([i])
            times[k].append((time.perf_counter() - t) * 1e3)
    total = np.sum([times[k] for k in procs], axis=0)
    print(f"per-token processor cost over {len(ids)} tokens of {path} (grammar active: {procs['grammar'].active}; "
          f"monitor triggers: {procs['monitor'].stats['triggers']})")
    for k, v in [*times.items(), ("all three", list(total))]:
        v = sorted(v)
        print(f"  {k:9s} p50 {v[len(v) // 2]:7.3f} ms   p90 {v[int(0.9 * len(v))]:7.3f} ms   mean {sum(v) / len(v):7.3f} ms")
    client.close()


def worse_in_samples(path: str, problems, single: bool) -> list:
    """The problems of ``path`` (an eval samples.jsonl) whose plain middle made the file worse."""
    from codedec_eval.tasks import infill_middle

    by_id = {p.task_id: p for p in problems}
    out = []
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        p = by_id.get(row.get("task_id"))
        if p is None or row.get("config") != "plain":
            continue
        middle = row.get("middle") or infill_middle(row["completion"], single, p.suffix)
        if error_nodes(p.prompt + middle + p.suffix) > error_nodes(p.prompt + p.suffix):
            out.append(p)
    return out


def score_runs(paths: list[str]) -> None:
    """Print worse / pass / EM per configuration of finished eval runs (samples.jsonl files), over
    the task ids that every configuration completed."""
    from codedec_eval.humaneval import load_humaneval_infilling
    from codedec_eval.runner import samples_by_config

    rows = {config: {t: row for t, row in by_task.items() if "middle" in row}  # infilling rows only
            for config, by_task in samples_by_config(paths).items()}
    rows = {config: by_task for config, by_task in rows.items() if by_task}
    if not rows:
        raise SystemExit(f"no infilling samples in {paths}")
    common = set.intersection(*(set(r) for r in rows.values()))
    problems = {}
    for split in ("single-line", "multi-line"):
        problems.update({p.task_id: p for p in load_humaneval_infilling(split)})
    missing = sorted(t for t in common if t not in problems)
    if missing:
        raise SystemExit(f"{len(missing)} task ids are not HumanEval infilling problems, e.g. {missing[0]}")
    base = {t: error_nodes(problems[t].prompt + problems[t].suffix) for t in common}
    print(f"{len(common)} problems completed by every configuration ({', '.join(rows)})")
    print(f"{'config':12s} {'worse':>11s} {'pass@1':>11s} {'exact':>11s} {'length':>7s} {'cut':>5s} {'last':>5s}")
    n = len(common)

    def adds_errors(t: str, middle: str) -> bool:
        return error_nodes(problems[t].prompt + middle + problems[t].suffix) > base[t]

    for config, by_task in rows.items():
        worse = [t for t in common if adds_errors(t, by_task[t]["middle"])]
        # of those, how many an earlier line end would fix ("cut"), and dropping only the last line ("last")
        cut_at = {}
        for t in worse:
            lines = by_task[t]["middle"].splitlines(keepends=True)
            cut_at[t] = next((k for k in range(len(lines) - 1, 0, -1) if not adds_errors(t, "".join(lines[:k]))), None)
            cut_at[t] = (cut_at[t], len(lines))
        cut = sum(k is not None for k, _ in cut_at.values())
        last = sum(k == m - 1 for k, m in cut_at.values())
        passed = sum(bool(by_task[t].get("passed")) for t in common)
        exact = sum(bool(by_task[t].get("exact_match")) for t in common)
        length = sum(by_task[t].get("finish_reason") == "length" for t in common)
        print(f"{config:12s} {len(worse):>4d} {100 * len(worse) / n:5.1f}% {passed:>4d} {100 * passed / n:5.1f}% "
              f"{exact:>4d} {100 * exact / n:5.1f}% {length:>7d} {cut:>5d} {last:>5d}")
    print("length: completions that ran to the token limit; cut / last: of the worse ones, how many an earlier"
          " line end would fix / dropping only the last line would fix")


def main() -> None:
    from codedec_eval.humaneval import load_humaneval_infilling
    from codedec_eval.sandbox import run_program
    from codedec_eval.tasks import infill_middle

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--single", type=int, default=12, help="single-line problems (evenly spread)")
    ap.add_argument("--multi", type=int, default=8, help="multi-line problems (evenly spread)")
    ap.add_argument("--configs", default="plain;grammar")
    ap.add_argument("--from-samples", default=None, metavar="SAMPLES_JSONL",
                    help="an eval run of one split (e.g. runs/baseline/infill-single/samples.jsonl): use the "
                         "problems whose plain completion there made the file worse, plus the evenly spread ones")
    ap.add_argument("--dump", default=None, help="append each completion (id, config, text, middle) to this JSONL")
    ap.add_argument("--overhead", metavar="FILE", default=None,
                    help="only measure the per-token cost of rpg, grammar and monitor on FILE's tokens")
    ap.add_argument("--overhead-tokens", type=int, default=400)
    ap.add_argument("--score", nargs="+", metavar="SAMPLES_JSONL", default=None,
                    help="rate finished humaneval-infilling eval runs instead of generating")
    args = ap.parse_args()
    if args.score:
        score_runs(args.score)
        return
    torch.set_grad_enabled(False)
    engine = Engine(load_model(args.model))
    if args.overhead:
        overhead(engine, args.overhead, args.overhead_tokens)
        return

    for split, n in (("single-line", args.single), ("multi-line", args.multi)):
        everything = load_humaneval_infilling(split)
        problems = [everything[int(i * len(everything) / n)] for i in range(n)]
        single = split == "single-line"
        if args.from_samples:
            problems = worse_in_samples(args.from_samples, everything, single) + problems
            n = len(problems)
        if n <= 0:
            continue
        print(f"\n{split}: {n} problems, greedy, {'64' if single else '128'} new tokens max")
        print(f"{'config':10s} {'worse':>7s} {'pass':>7s} {'fallback':>9s} {'proc ms/tok p50':>16s} {'p90':>7s}")
        for config in args.configs.split(";"):
            use = config.strip() == "grammar"
            worse = passed = fallback = 0
            times: list[float] = []
            t0 = time.perf_counter()
            for p in problems:
                text, ts, active = complete_one(engine, p, single, use)
                times += ts
                fallback += use and not active
                middle = infill_middle(text, single, p.suffix)
                bad = error_nodes(p.prompt + middle + p.suffix) > error_nodes(p.prompt + p.suffix)
                worse += bad
                if args.dump:
                    with open(args.dump, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"id": p.task_id, "config": config, "text": text, "middle": middle,
                                            "worse": bool(bad)}) + "\n")
                passed += run_program(p.program(middle), timeout_s=10.0).passed
            ms = sorted(t * 1e3 for t in times)
            p50 = statistics.median(ms) if ms else 0.0
            p90 = ms[int(0.9 * len(ms))] if ms else 0.0
            print(f"{config:10s} {worse:>3d}/{n:<3d} {passed:>3d}/{n:<3d} {fallback:>5d}/{n:<3d} {p50:16.2f} {p90:7.2f}"
                  f"   ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
