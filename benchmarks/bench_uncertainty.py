"""The editor's uncertainty rules on a replayed editing session: do they show fewer wrong characters?

A user writes function bodies of a pip-installed package line by line (files and functions in a
seeded order; the package is not the one ``codedec calibrate`` learned tau on). At the start of each
body line, after its indentation, the editor asks for a multi-line completion: prefix = the file up
to the cursor, suffix = the file after the function (the user is writing this function; the rest of
the file exists). The user's real next text is the rest of the function's body.

Each request runs once through the service (greedy, the embedded model, rules off); the result
carries each generated token's entropy and probability. The rules are then applied to that same
output with ``codedec.uncertainty.apply_rules`` — the function the service applies to its answers
and partials — and post-processed by ``postprocess.finalize`` as the service does, for each setting:

- ``off``: everything shown;
- ``cut:T``: a multi-line suggestion ends before the first line, after its first, whose first
  token's entropy is >= T nats (T = the calibrated tau, and lower / higher);
- ``abstain:P``: nothing shown when the first token's probability is < P;
- ``line:P``: nothing shown when the first line's tokens have a geometric-mean probability < P
  (``min_line_prob``; 0.6 and 0.7 were picked on the ``rich`` replay, so a second package's
  replay is the out-of-sample check);
- combinations.

What is scored (independent of the rules: plain string comparison with what the user wrote):
a shown character counts as useful when it lies in the common prefix of the shown text and the
user's real next text (what accepting the suggestion and keeping it would give).
**precision** = useful / shown characters; **recall** = useful characters / those of ``off`` (what
the rule costs in useful text); shown = requests with a non-empty suggestion; exact = shown
suggestions that are all useful. ``--check N`` also runs N requests through the service with the
rules on and asserts the service shows exactly what the offline replay says.

    .venv/bin/python benchmarks/bench_uncertainty.py --package rich --requests 150 \\
        --out benchmarks/raw/e9/uncertainty.samples.jsonl.gz
    .venv/bin/python benchmarks/bench_uncertainty.py --score benchmarks/raw/e9/uncertainty.samples.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_suffix import function_bodies  # noqa: E402

CALIBRATED_TAU = 2.431  # `codedec calibrate --model smollm2` (benchmarks/raw/e9/calibrate_smollm2.txt)
T = CALIBRATED_TAU
SETTINGS = [("off", None, None, None), ("cut:1.5", 1.5, None, None), (f"cut:{T}", T, None, None),
            ("cut:3.5", 3.5, None, None), ("abstain:0.2", None, 0.2, None), ("abstain:0.4", None, 0.4, None),
            ("abstain:0.6", None, 0.6, None), ("abstain:0.8", None, 0.8, None),
            (f"cut:{T}+abstain:0.2", T, 0.2, None),
            ("line:0.5", None, None, 0.5), ("line:0.6", None, None, 0.6), ("line:0.7", None, None, 0.7),
            (f"cut:{T}+line:0.6", T, None, 0.6), (f"cut:{T}+line:0.7", T, None, 0.7)]
# (name, uncertainty_cut, min_first_prob, min_line_prob)


def session(package: str, seed: int, max_requests: int) -> list[dict]:
    """Requests at the start of each body line (after its indentation) of functions of 6-30 body
    lines, one function per file, files in a seeded order."""
    out: list[dict] = []
    for path, text, fn, body_start, end in function_bodies(package, random.Random(seed), 6, 30):
        offset = body_start
        for line in text[body_start:end].split("\n"):
            indent = len(line) - len(line.lstrip())
            cursor = offset + indent
            offset += len(line) + 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            out.append({"id": f"{path.name}:{fn.name}@{cursor}", "path": str(path), "prefix": text[:cursor],
                        "suffix": text[end:], "real": text[cursor:end]})
            if len(out) >= max_requests:
                return out
    return out


def useful(shown: str, real: str) -> int:
    """Characters of ``shown`` in its common prefix with ``real``."""
    n = 0
    for a, b in zip(shown, real, strict=False):
        if a != b:
            break
        n += 1
    return n


def shown_under(row: dict, cut: float | None, min_prob: float | None, min_line_prob: float | None = None) -> str:
    from codedec.postprocess import finalize
    from codedec.uncertainty import apply_rules

    token_bytes = [bytes.fromhex(h) for h in row["token_bytes"]]
    text, _ = apply_rules(row["raw"], token_bytes, [tuple(u) for u in row["uncertainty"]], cut=cut,
                          min_prob=min_prob, single_line=False, skip=row["heal_text"], min_line_prob=min_line_prob)
    return finalize(text, row["prefix"], row["suffix"], "multi")


def run(package: str, seed: int, requests: int, max_tokens: int, check: int, threads: int | None) -> list[dict]:
    import torch

    from codedec.engine import Engine
    from codedec.loading import load_model
    from codedec.service import CompletionRequest, CompletionService, ServerSettings

    items = session(package, seed, requests)
    loaded = load_model("smollm2")
    service = CompletionService(Engine(loaded), threads=threads or torch.get_num_threads())
    table = service.engine.vocab.token_bytes
    settings = ServerSettings(max_tokens=max_tokens, time_budget_ms=None, context="none")
    rows = []

    def row_of(item: dict, res) -> dict:
        return {**item, "raw": res.raw_text, "shown_off": res.text,
                "token_bytes": [table[t].hex() for t in res.token_ids],
                "uncertainty": [list(u) for u in res.uncertainty],
                "heal_text": res.stats.get("heal_text") or "", "total_ms": res.stats.get("total_ms")}

    try:
        for i, item in enumerate(items):
            # A document per request: no edit-aware KV reuse between them (PIE is approximate).
            req = CompletionRequest.from_settings(settings, id=i, doc=f"replay:{i}", prefix=item["prefix"],
                                                  suffix=item["suffix"], single_line=False)
            rows.append(row_of(item, service.complete(req)))
            print(f"\r{i + 1}/{len(items)} requests", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        for i, item in enumerate(items[:check]):  # the service, rules on, shows what the replay says
            for name, cut, min_prob, min_line_prob in SETTINGS[1:]:
                req = CompletionRequest.from_settings(settings, id=f"check:{i}:{name}", doc=f"check:{i}:{name}",
                                                      prefix=item["prefix"], suffix=item["suffix"],
                                                      single_line=False, uncertainty_cut=cut, min_first_prob=min_prob,
                                                      min_line_prob=min_line_prob)
                res = service.complete(req)
                want = shown_under(row_of(item, res), cut, min_prob, min_line_prob)
                assert res.text == want, (item["id"], name, res.text, want)
        if check:
            print(f"checked: the service with the rules on showed what the replay computes "
                  f"({min(check, len(items))} requests x {len(SETTINGS) - 1} settings)", file=sys.stderr)
    finally:
        service.close()
    return rows


def score(rows: list[dict]) -> str:
    base = {r["id"]: useful(shown_under(r, None, None), r["real"]) for r in rows}
    base_useful = sum(base.values())
    out = [f"{len(rows)} requests (start of a body line, multi-line), SmolLM2-135M greedy; "
           f"useful = common prefix with what the user wrote next",
           f"{'setting':28} {'shown':>6} {'chars shown':>11} {'useful':>7} {'precision':>9} {'recall':>7} "
           f"{'exact':>6} {'withheld':>8} {'cut':>5}"]
    for name, cut, min_prob, min_line_prob in SETTINGS:
        shown = useful_chars = exact = withheld = cuts = chars = 0
        for r in rows:
            off = shown_under(r, None, None)
            text = shown_under(r, cut, min_prob, min_line_prob)
            if off and not text:
                withheld += 1
            elif text != off:
                cuts += 1
            if not text:
                continue
            shown += 1
            u = useful(text, r["real"])
            chars += len(text)
            useful_chars += u
            exact += u == len(text)
        precision = useful_chars / chars if chars else float("nan")
        recall = useful_chars / base_useful if base_useful else float("nan")
        out.append(f"{name:28} {shown:6d} {chars:11d} {useful_chars:7d} {precision:9.3f} {recall:7.3f} "
                   f"{exact:6d} {withheld:8d} {cuts:5d}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default="rich")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--check", type=int, default=10, help="requests re-run with the rules on in the service")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, help="per-request rows (.jsonl.gz)")
    ap.add_argument("--score", type=Path, help="score committed rows instead of running")
    args = ap.parse_args()
    if args.score:
        with gzip.open(args.score, "rt") as f:
            rows = [json.loads(line) for line in f]
    else:
        rows = run(args.package, args.seed, args.requests, args.max_tokens, args.check, args.threads)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(args.out, "wt") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    print(score(rows))


if __name__ == "__main__":
    main()
