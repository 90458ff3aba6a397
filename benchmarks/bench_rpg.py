"""RPG benchmark: repeated-line / repeated-structure rate of greedy completions, plain vs ``rpg``.

1. Candidates: HumanEval prompts (the first ``--humaneval N``) and function bodies of a real
   repository (``--repo``, default: the installed ``jedi`` package; each cursor is right after a
   ``def`` header and its docstring, prefix = the file up to there).
2. Selection: plain greedy decoding of the embedded model on every candidate; the ones whose
   completion repeats (``repetition_stats``: a repeated line or a structural run of >= 3 blocks)
   form the benchmark. The selection (with its plain completions, which are the baseline row) is
   cached in ``--cache`` (a JSON file) so later runs with other settings skip it.
3. Comparison: each configuration (``--configs "plain;rpg"``; ``rpg@decay=0.3,eos=2`` overrides
   ``RPGConfig`` fields) on the selected prompts: mean repeated-line and repeated-structure rates,
   mean new tokens, HumanEval pass count of the selected HumanEval prompts (sandboxed), and the
   RPG processor's own cost per token (replayed on the produced ids, p50) next to the measured
   decode ms/token.

    .venv/bin/python benchmarks/bench_rpg.py [--humaneval 40] [--repo-functions 30] [--max-new 200]
    .venv/bin/python benchmarks/bench_rpg.py --score runs/plain/samples.jsonl runs/rpg/samples.jsonl

``--score`` rates finished ``codedec eval humaneval`` runs instead of decoding: pass@1 of every
configuration over all problems, and the repetition rates over the problems whose *plain*
completion repeats (the benchmark at the scale of the whole of HumanEval) — of the completions
as the editor gets them and, where the rows carry ``raw_completion``, before the editor's
post-processing (``codedec.postprocess``: its ``cut_repetition`` ends a back-to-back repeat).

The machine is shared and noisy: compare the rates; treat the ms as indicative.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import random
import statistics
import time
import tokenize
from collections import Counter
from pathlib import Path

import torch

from codedec.context.fim import build_prompt
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.prepare import healing_chain
from codedec.processors.rpg import RPGConfig, RPGProcessor, repeated_lines, repetition_stats
from codedec.sampling import SamplingParams

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
REPO_STOPS = ("\nclass", "\ndef", "\n    def ", "\n\n\n")


def humaneval_candidates(n: int, samples: str | None = None) -> list[dict]:
    """The first ``n`` HumanEval prompts; with ``samples`` (an eval run's samples.jsonl) only the
    problems whose plain completion there repeats (the [E2] baseline already decoded them)."""
    from codedec_eval.humaneval import load_humaneval

    problems = load_humaneval()[:n]
    if samples:
        rows = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
        keep = {r["task_id"] for r in rows if r.get("config") == "plain"
                and (lambda s: s["repeated_lines"] or s["repeated_statements"])(repetition_stats(r["completion"]))}
        problems = [p for p in problems if p.task_id in keep]
    return [{"id": p.task_id, "prefix": p.prompt, "stops": HUMANEVAL_STOPS, "problem": p.task_id} for p in problems]


def repo_candidates(root: Path, n: int, seed: int = 0) -> list[dict]:
    """Cursors right after a function's header (and docstring) in the files under ``root``."""
    spots = []
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError):
            continue
        lines = text.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 3:
                continue
            first = node.body[0]
            is_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
            cut_line = (first.end_lineno if is_doc else node.body[0].lineno - 1)
            prefix = "".join(lines[:cut_line])
            if prefix.endswith("\n"):
                spots.append({"id": f"{path.relative_to(root.parent)}:{node.name}:{node.lineno}",
                              "prefix": prefix[-6000:], "stops": REPO_STOPS})
    random.Random(seed).shuffle(spots)
    return spots[:n]


def parse_config(spec: str) -> tuple[str, RPGConfig | None]:
    """"plain" -> no processor; "rpg" or "rpg@decay=0.3,eos=2" -> an RPGConfig."""
    spec = spec.strip()
    if spec in ("", "plain"):
        return "plain", None
    name, _, opts = spec.partition("@")
    if name != "rpg":
        raise ValueError(f"unknown configuration {spec!r}: use plain or rpg[@decay=..,eos=..,min=..]")
    fields = {"decay": "decay", "eos": "eos_boost", "min": "min_repeats", "period": "max_period"}
    kw = {}
    for part in filter(None, opts.split(",")):
        k, _, v = part.partition("=")
        kw[fields[k]] = float(v) if k in ("decay", "eos") else int(v)
    return spec, RPGConfig(**kw)


def run(engine: Engine, cand: dict, cfg: RPGConfig | None, max_new: int) -> dict:
    """One greedy completion of ``cand`` (the path of ``complete()``, with a tuned RPG processor)."""
    prompt = build_prompt(engine.preset, engine.tokenizer, cand["prefix"])
    processors = [] if cfg is None else [RPGProcessor(engine.vocab, engine.stop_ids, cfg)]
    params = SamplingParams(max_new_tokens=max_new, stop_strings=tuple(cand["stops"]), skip_text=prompt.heal_text)
    steps = list(engine.generate(prompt.ids, params, healing_chain(engine.vocab, prompt.heal_text, processors)))
    text = "".join(s.text for s in steps)
    ids = [i for s in steps for i in s.token_ids]
    m = steps[-1].metrics
    return {"text": text, "ids": ids, "new_tokens": len(ids), "ms_per_token": m.ms_per_token,
            "finish": steps[-1].finish_reason, **repetition_stats(text)}


def processor_cost_us(engine: Engine, ids: list[int], cfg: RPGConfig) -> list[float]:
    """Per-token cost of RPG (call on a [1, V] row + advance), replayed on ``ids``."""
    proc = RPGProcessor(engine.vocab, engine.stop_ids, cfg)
    row = torch.zeros(1, len(engine.vocab))
    out = []
    for i in ids:
        t = time.perf_counter()
        proc(row)
        proc.advance([i])
        out.append((time.perf_counter() - t) * 1e6)
    return out


def passes(task_id: str, text: str) -> bool:
    from codedec_eval.humaneval import load_humaneval
    from codedec_eval.sandbox import run_program

    problem = next(p for p in load_humaneval() if p.task_id == task_id)
    return run_program(problem.program(text), timeout_s=10.0).passed


def no_harm(engine: Engine, samples: str, configs: str, max_new: int) -> None:
    """Re-run the problems that passed with plain decoding in ``samples`` under each config."""
    from codedec_eval.humaneval import load_humaneval

    rows = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    passed = {r["task_id"] for r in rows if r.get("config") == "plain" and r.get("passed")}
    cands = [{"id": p.task_id, "prefix": p.prompt, "stops": HUMANEVAL_STOPS, "problem": p.task_id}
             for p in load_humaneval() if p.task_id in passed]
    print(f"{len(cands)} HumanEval problems passed with plain decoding in {samples}")
    for spec in configs.split(";"):
        name, cfg = parse_config(spec)
        ok = sum(passes(c["problem"], run(engine, c, cfg, max_new)["text"]) for c in cands)
        print(f"{name:28s} still pass: {ok}/{len(cands)}")


def score_runs(paths: list[str]) -> None:
    """Print pass@1 (all problems) and repetition rates (the problems whose plain completion
    repeats) per configuration of finished HumanEval eval runs."""
    from codedec_eval.runner import samples_by_config

    rows = samples_by_config(paths)  # config -> task_id -> row
    if "plain" not in rows:
        raise SystemExit(f"no plain configuration in {paths}: it defines which problems repeat")
    common = sorted(set.intersection(*(set(r) for r in rows.values())))
    stats = {c: {t: repetition_stats(r[t]["completion"]) for t in common} for c, r in rows.items()}
    # which problems repeat is what the model wrote: the raw completion where the rows have it
    # (the editor's post-processing cuts back-to-back repeats from "completion")
    select = {t: repetition_stats(rows["plain"][t].get("raw_completion", rows["plain"][t]["completion"]))
              for t in common}
    repeating = [t for t in common if select[t]["repeated_lines"] or select[t]["repeated_statements"]]
    if not repeating:
        raise SystemExit("no plain completion repeats: nothing to compare")
    print(f"{len(common)} problems in every run; plain repeats in {len(repeating)} of them")
    print(f"{'config':12s} {'pass@1':>7s} {'rep.line':>9s} {'rep.struct':>11s} {'lines w/ rep':>13s} {'new tok':>8s}")
    mean = statistics.fmean
    for config, by_task in rows.items():
        st = stats[config]
        passed = sum(bool(by_task[t].get("passed")) for t in common)
        print(f"{config:12s} {100 * passed / len(common):6.1f}% "
              f"{mean(st[t]['repeated_line_rate'] for t in repeating):9.3f} "
              f"{mean(st[t]['repeated_structure_rate'] for t in repeating):11.3f} "
              f"{sum(st[t]['repeated_lines'] > 0 for t in repeating):>6d}/{len(repeating):<6d} "
              f"{mean(by_task[t]['new_tokens'] for t in repeating):8.1f}")
    raw = {c: r for c, r in rows.items() if all("raw_completion" in r[t] for t in repeating)}
    for config, by_task in raw.items():  # the same, before the editor post-processing (cut_repetition)
        rates = [repetition_stats(by_task[t]["raw_completion"]) for t in repeating]
        print(f"{config + ' raw':12s} {'':7s} {mean(s['repeated_line_rate'] for s in rates):9.3f} "
              f"{mean(s['repeated_structure_rate'] for s in rates):11.3f} "
              f"{sum(s['repeated_lines'] > 0 for s in rates):>6d}/{len(repeating):<6d}")
    for config, by_task in rows.items():  # what the repeated lines are
        repeated = [line for t in repeating for line in repeated_lines(by_task[t]["completion"])[1]]
        long_rate = mean(_rate(*repeated_lines(long_lines(by_task[t]["completion"]))) for t in repeating)
        top = ", ".join(f"{line!r} x{n}" for line, n in Counter(repeated).most_common(3))
        print(f"  {config}: repeated-line rate over lines of >= 4 tokens {long_rate:.3f}; most repeated: {top}")


def _n_tokens(line: str) -> int:
    try:
        return sum(tok.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
                   for tok in tokenize.generate_tokens(io.StringIO(line.strip()).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return len(line.split())


def _rate(lines: int, again: list[str]) -> float:
    return len(again) / lines if lines else 0.0


def long_lines(text: str, min_tokens: int = 4) -> str:
    """``text`` without its lines of fewer than ``min_tokens`` Python tokens (``return True``)."""
    return "\n".join(line for line in text.splitlines() if _n_tokens(line) >= min_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--humaneval", type=int, default=40, help="first N HumanEval prompts as candidates")
    ap.add_argument("--from-samples", default=None,
                    help="an eval samples.jsonl: keep the HumanEval problems whose plain completion repeats there")
    ap.add_argument("--repo", default=None, help="a source tree (default: the installed jedi package)")
    ap.add_argument("--repo-functions", type=int, default=30)
    ap.add_argument("--max-new", type=int, default=200)
    ap.add_argument("--configs", default="plain;rpg")
    ap.add_argument("--cache", default="runs/bench_rpg_selection.json")
    ap.add_argument("--dump", default=None, help="append each completion (id, config, text) to this JSONL file")
    ap.add_argument("--no-harm", default=None, metavar="SAMPLES_JSONL",
                    help="only check the HumanEval problems that passed with plain decoding in this eval run: "
                         "how many still pass under each configuration")
    ap.add_argument("--score", nargs="+", metavar="SAMPLES_JSONL", default=None,
                    help="rate finished humaneval eval runs (one must have the plain configuration)")
    args = ap.parse_args()
    if args.score:
        score_runs(args.score)
        return
    torch.set_grad_enabled(False)

    loaded = load_model(args.model)
    engine = Engine(loaded)
    if args.no_harm:
        no_harm(engine, args.no_harm, args.configs, args.max_new)
        return

    cache = Path(args.cache)
    selected: list[dict]
    if cache.exists():
        selected = json.loads(cache.read_text())
        print(f"selection: {len(selected)} repeating prompts from {cache}")
    else:
        import jedi

        root = Path(args.repo) if args.repo else Path(jedi.__file__).parent
        cands = humaneval_candidates(args.humaneval, args.from_samples) + repo_candidates(root, args.repo_functions)
        selected = []
        t0 = time.perf_counter()
        for i, cand in enumerate(cands):
            r = run(engine, cand, None, args.max_new)
            if r["repeated_lines"] or r["repeated_statements"]:
                entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cand.items()}
                entry["plain"] = r  # the scan is the plain run: kept, not decoded again
                selected.append(entry)
            print(f"\rscan {i + 1}/{len(cands)}: {len(selected)} repeat ({time.perf_counter() - t0:.0f} s)",
                  end="", flush=True)
        print()
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(selected, indent=1))
    if not selected:
        print("no prompt repeats under plain decoding: nothing to compare (try more --humaneval / --repo-functions)")
        return
    n_he = sum("problem" in c for c in selected)
    print(f"{len(selected)} prompts ({n_he} HumanEval, {len(selected) - n_he} repository), "
          f"max_new_tokens={args.max_new}, greedy")

    header = f"{'config':28s} {'rep.line':>8s} {'rep.struct':>10s} {'tokens':>7s} {'HE pass':>8s} {'ms/tok':>7s} {'rpg us/tok p50':>15s}"
    print(header)
    for spec in args.configs.split(";"):
        name, cfg = parse_config(spec)
        rows = [c["plain"] if cfg is None and "plain" in c else run(engine, c, cfg, args.max_new) for c in selected]
        if cfg is None and not all("plain" in c for c in selected):  # keep the baseline for later runs
            for c, r in zip(selected, rows, strict=True):
                c["plain"] = r
            cache.write_text(json.dumps(selected, indent=1))
        if args.dump:
            with open(args.dump, "a", encoding="utf-8") as f:
                for c, r in zip(selected, rows, strict=True):
                    f.write(json.dumps({"id": c["id"], "config": name, "text": r["text"]}) + "\n")
        he_pass = sum(passes(c["problem"], r["text"]) for c, r in zip(selected, rows, strict=True) if "problem" in c)
        cost = [us for r in rows for us in processor_cost_us(engine, r["ids"], cfg or RPGConfig())]
        mean = statistics.fmean
        print(f"{name:28s} {mean(r['repeated_line_rate'] for r in rows):8.3f} "
              f"{mean(r['repeated_structure_rate'] for r in rows):10.3f} "
              f"{mean(r['new_tokens'] for r in rows):7.1f} {he_pass:>4d}/{n_he:<3d} "
              f"{statistics.median(r['ms_per_token'] for r in rows):7.1f} "
              f"{statistics.median(cost) if cost else 0.0:15.0f}")


if __name__ == "__main__":
    main()
