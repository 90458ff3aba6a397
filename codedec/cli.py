"""``codedec`` command line: ``complete``, ``serve``, ``eval``, ``bench``.

This is a frontend: it parses arguments into ``ServerSettings``, loads the model, completes through
the same ``CompletionService`` pipeline as the servers (``codedec.complete``) and converts
every error once, here, into one clear message on stderr and exit code 2 (no traceback for bad
input: missing file, cursor outside the file, unknown model or decoding component).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one message, exit code 2."""


@dataclass(frozen=True)
class Cursor:
    path: Path
    line: int  # 1-based
    col: int  # 1-based, in characters


def parse_location(spec: str) -> Cursor:
    """``FILE:LINE:COL`` (1-based, as editors show them) -> ``Cursor``. FILE may contain ':'."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise CliError(f"expected FILE:LINE:COL (1-based), got {spec!r}")
    try:
        line, col = int(parts[1]), int(parts[2])
    except ValueError:
        raise CliError(f"LINE and COL must be integers in {spec!r}") from None
    if line < 1 or col < 1:
        raise CliError(f"LINE and COL are 1-based; got line {line}, column {col}")
    return Cursor(Path(parts[0]), line, col)


def split_at_cursor(text: str, line: int, col: int, name: str = "file") -> tuple[str, str]:
    """Split ``text`` at 1-based (line, col) into (prefix, suffix).

    The column may be one past the end of the line (the end of the line); the line may be one past
    the last line when the file ends with a newline (the empty last line).
    """
    lines = text.split("\n")  # the piece after a final "\n" is the empty last line
    if line > len(lines):
        raise CliError(f"line {line} is past the end of {name} ({len(lines)} lines)")
    current = lines[line - 1]
    if col > len(current) + 1:
        raise CliError(f"column {col} is past the end of line {line} of {name} ({len(current)} characters)")
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def read_source(path: Path) -> str:
    if not path.exists():
        raise CliError(f"no such file: {path}")
    if path.is_dir():
        raise CliError(f"{path} is a directory; give a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="utf-8", errors="replace")
        print(f"codedec: {path} is not valid UTF-8; {text.count(chr(0xFFFD))} invalid sequence(s) read as U+FFFD",
              file=sys.stderr)
    if not text.strip():
        raise CliError(f"{path} is empty: there is nothing to complete from")
    return text


def _load(spec: str):
    from transformers.utils import logging as hf_logging

    from codedec.loading import ModelLoadError, ModelNotFoundError, load_model

    hf_logging.disable_progress_bar()  # our own progress messages go to stderr instead

    try:
        return load_model(spec, progress=lambda msg: print(f"codedec: {msg}", file=sys.stderr, flush=True))
    except (ModelNotFoundError, ModelLoadError) as err:
        raise CliError(str(err)) from None


def settings_from_complete_args(args: argparse.Namespace):
    """The ``codedec complete`` flags as the one settings type every frontend uses."""
    from codedec.settings import ServerSettings

    given = {
        "model": args.model, "max_tokens": args.max_tokens, "decoding": args.decoding, "heal": not args.no_heal,
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
        "time_budget_ms": args.max_time_ms, "line_mode": "single" if args.single_line else args.line_mode,
        "strategy": args.strategy, "max_prompt_tokens": args.max_prompt_tokens,
        "uncertainty_cut": args.uncertainty_cut, "min_first_prob": args.min_first_prob,
        "min_line_prob": args.min_line_prob,
        "context": args.context, "context_tokens": args.context_tokens,
    }
    try:
        return ServerSettings.from_options(given)
    except ValueError as err:
        raise CliError(str(err)) from None


def cmd_complete(args: argparse.Namespace) -> int:
    from codedec.complete import complete
    from codedec.engine import Engine
    from codedec.heuristics import MULTI, NONE, SINGLE, decide_mode
    from codedec.service import CompletionService

    cursor = parse_location(args.location)
    text = read_source(cursor.path)
    prefix, suffix = split_at_cursor(text, cursor.line, cursor.col, str(cursor.path))
    settings = settings_from_complete_args(args)
    mode = decide_mode(prefix, suffix, settings.line_mode)
    if mode == NONE:  # asked explicitly: complete anyway, this line only unless forced multi
        mode = MULTI if settings.line_mode == MULTI else SINGLE
    file = str(cursor.path.resolve())  # names the file for the monitor and keys its cache
    if "monitor" in settings.decoding:  # its language server starts while the model loads
        from codedec.processors.monitor import warm_language_server

        warm_language_server(file)
    loaded = _load(settings.model)
    service = CompletionService(Engine(loaded), warmup=None)

    def stream(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    try:
        result = complete(service, prefix, suffix, settings=settings, single_line=mode == SINGLE,
                          path=file, doc=file,
                          on_delta=None if args.json else stream)
    except ValueError as err:
        raise CliError(str(err)) from None
    finally:
        service.close()
    if args.json:
        out = result.as_dict()
        out.update(model=loaded.name, decoding=list(settings.decoding), mode=mode, strategy=settings.strategy,
                   tokens=len(result.token_ids), ms_per_token=round(result.ms_per_token, 3),
                   constraints=result.stats.get("constraints", {}), context=result.stats.get("context"))
        if result.stats.get("strategy_stats"):
            out["strategy_stats"] = result.stats["strategy_stats"]
        print(json.dumps(out, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(
            f"-- {len(result.token_ids)} tokens in {result.forwards} forwards, finish={result.finish_reason}; "
            f"prompt {result.prompt_tokens} tokens ({result.reused_tokens} reused); first token "
            f"{result.ttft_ms:.0f} ms; {result.ms_per_token:.1f} ms/token; total {result.total_ms:.0f} ms",
            file=sys.stderr,
        )
        if result.stats.get("context"):
            c = result.stats["context"]
            print(f"-- context {c['mode']}: {c.get('chunks_out', 0)} of {c.get('chunks_in', 0)} chunks, "
                  f"{c.get('tokens_out', 0)} tokens"
                  + (f" (from {c['tokens_in']}, compressed in {c.get('zip_ms', 0):.0f} ms)" if "tokens_in" in c else "")
                  + f"; gathered in {c.get('gather_ms', 0):.0f} ms", file=sys.stderr)
        if result.stats.get("constraints"):  # a constraint that switched itself off is said, not hidden
            from codedec.constraint_report import constraint_line

            print(f"-- {constraint_line(result.stats['constraints'])}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Learn and store the model's AdaDec threshold (``codedec.calibrate``)."""
    import torch

    from codedec.calibrate import calibrate, calibration_path

    torch.set_grad_enabled(False)
    loaded = _load(args.model)

    def progress(done: int, total: int) -> None:
        print(f"\rcodedec: calibrating {loaded.name} on {args.package}: window {done}/{total}", end="",
              file=sys.stderr, flush=True)

    try:
        cal = calibrate(loaded, package=args.package, windows=args.windows, window_tokens=args.window_tokens,
                        seed=args.seed, progress=progress)
    except ValueError as err:
        raise CliError(str(err)) from None
    print(file=sys.stderr)
    print(f"tau = {cal.tau:.3f} nats (sigmoid({cal.a:.3f} * H + {cal.b:.3f}) = 0.5) from {cal.positions} positions, "
          f"greedy wrong at {100 * cal.mismatch_rate:.1f} %; stored in {calibration_path(loaded.source)}")
    return 0


def cmd_not_yet(args: argparse.Namespace) -> int:
    print(f"codedec {args.command}: not yet available in this version", file=sys.stderr)
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    from codedec.presets import DEFAULT_MODEL
    from codedec.settings import add_precision_option

    parser = argparse.ArgumentParser(
        prog="codedec",
        description="Local code completion with code-aware decoding.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("complete", help="complete a file at FILE:LINE:COL and stream the text to stdout")
    p.add_argument("location", metavar="FILE:LINE:COL", help="cursor position, 1-based as editors show it")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name, local dir, .gguf file or cached hub id")
    p.add_argument("--max-tokens", type=int, default=64, help="maximum new tokens (default 64)")
    p.add_argument("--decoding", default="", help="comma-separated decoding components (empty = plain)")
    p.add_argument("--single-line", action="store_true", help="stop at the end of the current line")
    p.add_argument("--line-mode", choices=("auto", "single", "multi"), default="auto",
                   help="auto (default): single in the middle of a statement, multi on a blank line or after "
                   "a block opener; a multi-line completion ends where the cursor's block ends")
    p.add_argument("--no-heal", action="store_true", help="turn token healing at the cursor off")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--strategy", default="plain",
                   help="decoding strategy (plain: one token per forward; adadec: lookahead rerank where the "
                        "model is unsure; suffix: lossless speculation from text already seen)")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="prompt budget in tokens (default: the preset's)")
    p.add_argument("--max-time-ms", type=float, default=None, help="wall-clock budget for the completion")
    p.add_argument("--uncertainty-cut", type=float, default=None, metavar="NATS",
                   help="end a multi-line completion before the first line after its first where the model's "
                        "entropy reaches NATS (off by default)")
    p.add_argument("--min-first-prob", type=float, default=None, metavar="P",
                   help="show nothing when the first token's probability is below P (off by default)")
    p.add_argument("--min-line-prob", type=float, default=None, metavar="P",
                   help="show nothing when the first line's tokens are less likely than P on geometric mean "
                        "(off by default; benchmarks/RESULTS.md measures it)")
    p.add_argument("--context", default="truncate", choices=("none", "truncate", "longcodezip", "coarse"),
                   help="cross-file context from the file's workspace: none, truncate (default), longcodezip "
                        "(LongCodeZip compression with the model), coarse (its function-level stage only)")
    p.add_argument("--context-tokens", type=int, default=None, metavar="N",
                   help="token budget of the cross-file context (default: a quarter of the prompt budget)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_precision_option(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("calibrate", help="learn the model's AdaDec entropy threshold from real code (teacher forcing)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name, local dir, .gguf file or cached hub id")
    p.add_argument("--package", default="click",
                   help="an installed package whose code is the calibration set (never a test set)")
    p.add_argument("--windows", type=int, default=48, help="code windows to teacher-force (default 48)")
    p.add_argument("--window-tokens", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_calibrate)

    # `eval` is delegated whole to the harness's own parser (see main()); listed here for --help.
    sub.add_parser("eval", help="evaluate quality and latency: humaneval, humaneval-infilling, repobench, "
                   "build-repobench (codedec eval --help)", add_help=False)

    from lsp_server.cli import add_serve_arguments, run_serve
    from lsp_server.stats import add_stats_arguments, run_stats

    q = sub.add_parser("serve", help="run the language server (stdio/TCP) and/or the websocket API")
    add_serve_arguments(q)
    q.set_defaults(func=run_serve)
    q = sub.add_parser("stats", help="acceptance rate and latency percentiles from the local telemetry log")
    add_stats_arguments(q)
    q.set_defaults(func=run_stats)
    q = sub.add_parser("bench", help="run benchmarks (not yet: use the scripts in benchmarks/)")
    q.add_argument("rest", nargs=argparse.REMAINDER)
    q.set_defaults(func=cmd_not_yet)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        from codedec_eval.cli import main as eval_main

        return eval_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from codedec.settings import use_precision_option

    use_precision_option(args)  # read by load_model, here and in servers started from here
    try:
        return args.func(args)
    except CliError as err:
        print(f"codedec: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
