"""``codedec eval ...``: the command line of the evaluation harness.

Subcommands (each prints the side-by-side table and writes ``samples.jsonl``,
``summary.json`` and ``quality_vs_latency.png`` under ``--out``; re-running resumes)::

    humaneval            [--model M] [--decoding "a,b;c"] [--limit N] [--n-samples K] [--temperature T]
                         [--data PATH] [--out DIR]
    humaneval-infilling  --split single-line|multi-line  [same options]
    repobench            --data FILE(.jsonl|.jsonl.gz|.parquet) [--max-prompt-tokens N] [--repo-root DIR]
                         [same options]
    build-repobench      --repo DIR --out FILE [--n N] [--seed S] [--edit-sim]

``main(argv)`` returns the exit status (0 ok, 2 misuse or bad data) and is what
``codedec eval`` delegates to; ``python -m codedec_eval.cli`` works too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    from codedec.presets import DEFAULT_MODEL
    from codedec.settings import add_precision_option

    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name, local dir, .gguf or cached hub id")
    p.add_argument("--decoding", default="",
                   help='configurations to compare: "a,b;c" (";" separates configurations, "" = plain, '
                        '"no-heal" turns token healing off)')
    p.add_argument("--limit", type=int, default=None, help="only the first N problems / records")
    add_precision_option(p)
    p.add_argument("--n-samples", type=int, default=1, help="completions per problem (pass@k needs k <= N)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0, help="base seed when sampling")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    p.add_argument("--max-time-ms", type=float, default=None, help="wall-clock budget per completion")
    p.add_argument("--timeout", type=float, default=10.0, help="sandbox timeout per program, seconds")
    p.add_argument("--out", type=Path, default=None, help="results directory (default runs/<task>/<model>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codedec eval", description="Evaluate completion quality and latency.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    p = sub.add_parser("humaneval", help="HumanEval (164 problems), pass@k by sandboxed execution")
    _common(p)
    p.add_argument("--data", type=Path, default=None, help="another copy of HumanEval.jsonl(.gz)")
    p = sub.add_parser("humaneval-infilling", help="HumanEval infilling, pass@1 and exact match")
    _common(p)
    p.add_argument("--split", choices=["single-line", "multi-line"], default="single-line")
    p.add_argument("--data", type=Path, default=None, help="another copy of the split's .jsonl(.gz)")
    p = sub.add_parser("repobench", help="RepoBench-style next-line completion, EM and ES per level")
    _common(p)
    p.add_argument("--data", type=Path, required=True, help="records: .jsonl, .jsonl.gz or .parquet")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="prompt budget (default: context)")
    p.add_argument("--repo-root", type=Path, default=None,
                   help="the checkout the records were built from (the monitor opens each record's file there)")
    p.add_argument("--context-source", choices=("inline", "records", "repo", "none"), default="inline",
                   help="cross-file context: inline (the records' snippets in the prompt text, as the official "
                        "harness; default), records (the snippets fitted by each configuration's context:MODE), "
                        "repo (gathered from --repo-root by the service, as for an editor), none (in-file only)")
    p = sub.add_parser("build-repobench", help="build RepoBench-style records from a local Python repo")
    p.add_argument("--repo", type=Path, required=True, help="repository (or package) directory")
    p.add_argument("--out", type=Path, required=True, help="output .jsonl")
    p.add_argument("--n", type=int, default=200, help="number of records (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--edit-sim", action="store_true", help="add a simulated earlier edit to each record")
    return parser


def _build(args: argparse.Namespace) -> int:
    from codedec_eval.build_repobench import build_records, write_records

    rows = build_records(args.repo, args.n, args.seed, edit_sim=args.edit_sim)
    write_records(rows, args.out)
    levels: dict[str, int] = {}
    for row in rows:
        levels[row["level"]] = levels.get(row["level"], 0) + 1
    print(f"wrote {len(rows)} records to {args.out} (levels: {levels})")
    return 0


def _make_task(args: argparse.Namespace, loaded):
    from codedec_eval import humaneval, repobench, tasks

    limit = slice(None, args.limit)
    if args.task == "humaneval":
        return tasks.HumanEvalTask(humaneval.load_humaneval(args.data)[limit], timeout_s=args.timeout)
    if args.task == "humaneval-infilling":
        problems = humaneval.load_humaneval_infilling(args.split, args.data)[limit]
        return tasks.InfillingTask(problems, args.split, timeout_s=args.timeout)
    tok = loaded.tokenizer
    context = int(loaded.preset.get("context_tokens") or 2048)
    budget = args.max_prompt_tokens or context - (args.max_new_tokens or tasks.RepoBenchTask.max_new_tokens)
    records = repobench.load_repobench(args.data)[limit]
    root = args.repo_root
    if root is not None:
        if not root.is_dir():
            raise ValueError(f"--repo-root {root} is not a directory")
        missing = [r.file_path for r in records if not (root / r.file_path).is_file()]
        if missing:
            raise ValueError(f"--repo-root {root} does not hold the records' files ({len(missing)} missing, "
                             f"e.g. {missing[0]}): pass the directory given to build-repobench --repo")
        root = root.resolve()
    return tasks.RepoBenchTask(records,
                               count_tokens=lambda s: len(tok.encode(s, add_special_tokens=False, verbose=False)),
                               max_prompt_tokens=budget, repo_root=root, context_source=args.context_source)


def _evaluate(args: argparse.Namespace) -> int:
    from codedec_eval.runner import RunSettings, parse_configs, run_eval
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from codedec.engine import Engine
    from codedec.loading import load_model

    configs = parse_configs(args.decoding)  # validate before loading a model
    hf_logging.disable_progress_bar()  # the console status line shows the load
    console = Console()
    with console.status(f"loading {args.model} ..."):
        loaded = load_model(args.model)
    task = _make_task(args, loaded)
    if args.task != "repobench":  # these run generated code
        from codedec_eval.isolation import probe_isolation

        iso = probe_isolation(sys.executable)
        style = "" if iso.bwrap else "bold red"
        console.print(f"sandbox: {iso.describe()}", style=style, soft_wrap=True)
    name = task.name + (f"-{args.split}" if args.task == "humaneval-infilling" else "")
    out = args.out or Path("runs") / name / loaded.name.replace("/", "_")
    settings = RunSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           n_samples=args.n_samples, seed=args.seed, max_time_ms=args.max_time_ms,
                           max_prompt_tokens=getattr(args, "max_prompt_tokens", None))
    run_eval(task, Engine(loaded), configs, settings, out, progress=not args.no_progress, console=console)
    console.print(f"results in {out}/: samples.jsonl, summary.json, quality_vs_latency.png", soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from codedec.settings import use_precision_option

    use_precision_option(args)  # read by load_model
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return _build(args) if args.task == "build-repobench" else _evaluate(args)
    except (ValueError, ImportError) as err:  # DataError is a ValueError
        print(f"codedec eval: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("codedec eval: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
