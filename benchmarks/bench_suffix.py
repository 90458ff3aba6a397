"""SuffixDecoding against plain greedy on the embedded model, all workloads in one run (E8 item 6).

Two ``CompletionService``s over one loaded model (the same pipeline the editor's requests take:
prompt assembly, healing, prefix/PIE cache reuse, post-processing): ``plain`` (strategy plain) and
``suffix`` (strategy suffix: drafts from the prompt, the text after the cursor, the document's
previous completion and the text an edit replaced, and a global index of earlier completions).
Both get the same requests in the same order; which one runs first alternates per sample, so
their ratio is measured side by side.

Workloads:

(a) ``humaneval``: HumanEval prompts (first ``--n-humaneval``), multi-line, ``--max-tokens``;
(b) ``edit``: edit-and-recomplete sessions on real files of a pip-installed package (default
    click): the cursor at the start of a line inside a function whose lines from there on are
    removed (the user is writing them); a first completion there; then an edit elsewhere (a line
    inserted above the function, or a statement appended at the file's top); then the same
    completion again — that second request is measured (the previous completion is in the
    suffix service's draft);
(c) ``repobench``: RepoBench-style next lines built from the same package
    (``codedec_eval.build_repobench``), single-line, cross-file context;
(d) ``typing``: a replayed typing session — a function body of a real file typed word by word,
    a request after every word, as an editor sends them (single-line mid-line, multi-line at a
    line start), every request measured;
    ``server``: the same session against two running language servers (``python -m lsp_server``
    over stdio, ``strategy`` plain vs suffix in the initialization options, the model's default
    dtype), didChange per word then an inline completion, as an editor; the latency is the
    client's, from request to answer; answers from the typed-ahead result cache count alike.

Per request: generated tokens, model forwards, the generation's time after the prompt's prefill
(decode ms), the whole request's time, and the suffix strategy's stats (acceptance histogram,
drafting time). Reports per workload: tokens per forward, the acceptance-length histogram, the
paired decode tokens/s ratio suffix / plain (median [p10..p90]) and the same for the whole
request, drafting time as a share of a decode step, and how many completions were
token-identical (greedy must be).

    .venv/bin/python benchmarks/bench_suffix.py --dtype float32 --out benchmarks/raw/e8/suffix_fp32

Writes ``<out>.rows.jsonl.gz`` (one row per request and condition) and prints the table;
``--summarize ROWS`` prints the table of a finished run again.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.util
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from codedec.engine import Engine
from codedec.loading import load_model
from codedec.service import CompletionRequest, CompletionService

CONDITIONS = ("plain", "suffix")
WORKLOADS = ("humaneval", "edit", "repobench", "typing", "server")


# ------------------------------------------------------------------------------- workloads

def package_files(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p for p in root.rglob("*.py") if p.stat().st_size > 2000)


def functions(text: str) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.end_lineno - n.body[0].lineno >= 4]


def edit_sessions(package: str, n: int, seed: int) -> list[dict]:
    """(b): per session, the text before the edit, the text after it, the cursor's offset in each."""
    rng = random.Random(seed)
    out = []
    files = package_files(package)
    rng.shuffle(files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        funcs = functions(text)
        if not funcs:
            continue
        fn = rng.choice(funcs)
        lines = text.split("\n")
        body = [i for i in range(fn.body[0].lineno, fn.end_lineno - 1) if lines[i - 1].strip()
                and not lines[i - 1].strip().startswith(("#", '"""', "'''"))]
        if not body:
            continue
        line = rng.choice(body[: max(1, len(body) // 2)])  # 1-based: from here the body is removed
        indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
        before_lines = lines[: line - 1] + [" " * indent]
        after_lines = lines[fn.end_lineno :]
        prefix = "\n".join(before_lines)
        suffix = "\n" + "\n".join(after_lines)
        kind = rng.choice(["above", "top"])
        if kind == "above":  # a comment line inserted above the function
            at = len("\n".join(lines[: fn.lineno - 1 - len(fn.decorator_list)]))
            insert = "\n# NOTE: keep this in sync with the docs" if at else "# NOTE: keep in sync\n"
        else:
            at = 0
            insert = "import logging\n"
        edited = prefix[:at] + insert + prefix[at:]
        out.append({"id": f"{path.name}:{line}", "path": str(path), "kind": kind, "prefix0": prefix,
                    "prefix": edited, "suffix": suffix})
        if len(out) >= n:
            break
    return out


def function_bodies(package: str, rng: random.Random, min_lines: int, max_lines: int):
    """(path, text, function, body start offset, end offset): one function of ``min_lines`` to
    ``max_lines`` body lines per file of ``package``, files in ``rng``'s order."""
    files = package_files(package)
    rng.shuffle(files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        funcs = [f for f in functions(text) if min_lines <= f.end_lineno - f.body[0].lineno <= max_lines]
        if not funcs:
            continue
        fn = rng.choice(funcs)
        lines = text.split("\n")
        start = len("\n".join(lines[: fn.body[0].lineno - 1])) + 1  # first body line's start
        yield path, text, fn, start, len("\n".join(lines[: fn.end_lineno]))


def typing_session(package: str, seed: int, max_requests: int) -> list[dict]:
    """(d): requests after every word while a function body is typed."""
    for path, text, _fn, start, end in function_bodies(package, random.Random(seed), 6, 25):
        body = text[start:end]
        suffix = text[end:]
        stops = [m.end() for m in re.finditer(r"\w+|[^\w\s]+|\n[ \t]*", body)]
        reqs = []
        for k in stops:
            prefix = text[:start] + body[:k]
            cur_line = prefix.rsplit("\n", 1)[-1]
            reqs.append({"id": f"{path.name}@{k}", "path": str(path), "prefix": prefix, "start": start,
                         "suffix": suffix, "single_line": bool(cur_line.strip())})
            if len(reqs) >= max_requests:
                break
        return reqs
    raise SystemExit("no function to type")


def repobench_records(package: str, n: int, seed: int) -> list[dict]:
    from codedec_eval.build_repobench import build_records
    from codedec_eval.repobench import build_prompt, record_from_dict

    spec = importlib.util.find_spec(package)
    root = Path(next(iter(spec.submodule_search_locations)))
    out = []
    for i, row in enumerate(build_records(root, n, seed=seed, repo_name=package)):
        record = record_from_dict(row)
        out.append({"id": f"{record.file_path}:{row.get('line_no', i)}", "prefix": build_prompt(record, None, 1536),
                    "suffix": "", "single_line": True})
    return out


# ------------------------------------------------------------------------------- running

def request(service: CompletionService, doc: str, item: dict, strategy: str, max_tokens: int, rid: str):
    req = CompletionRequest(id=rid, doc=doc, prefix=item["prefix"], suffix=item.get("suffix", ""),
                            single_line=item.get("single_line", False), max_tokens=max_tokens,
                            strategy=strategy, path=item.get("path"))
    t0 = time.perf_counter()
    res = service.complete(req)
    wall = (time.perf_counter() - t0) * 1000.0
    st = res.stats
    return {"tokens": len(res.token_ids), "forwards": st.get("forwards"), "total_ms": st.get("total_ms"),
            "prefill_ms": st.get("prefill_ms"), "wall_ms": wall, "finish": res.finish_reason,
            "token_ids": res.token_ids, "strategy_stats": st.get("strategy_stats"), "error": res.error}


def run_workload(name: str, items: list[dict], services: dict, args, out) -> None:
    for i, item in enumerate(items):
        order = list(CONDITIONS) if i % 2 == 0 else list(reversed(CONDITIONS))
        rows = {}
        for cond in order:
            doc = f"file:///{name}/{item.get('doc', item['id'])}"
            max_tokens = args.max_tokens if not item.get("single_line") else 48
            if name == "edit":  # the first completion, before the edit (not measured)
                request(services[cond], doc, dict(item, prefix=item["prefix0"]), cond, max_tokens, f"{i}-0")
            rows[cond] = request(services[cond], doc, item, cond, max_tokens, f"{i}")
        same = rows["plain"]["token_ids"] == rows["suffix"]["token_ids"]
        for cond, row in rows.items():
            out.write(json.dumps({"workload": name, "item": item["id"], "i": i, "condition": cond, "same": same,
                                  **row}) + "\n")
        out.flush()
        p, s = rows["plain"], rows["suffix"]
        print(f"  {name} {i + 1}/{len(items)} {item['id'][:40]:40s} tokens {p['tokens']:3d}/{s['tokens']:3d} "
              f"forwards {p['forwards']}/{s['forwards']} ms {p['total_ms']:.0f}/{s['total_ms']:.0f}"
              f"{'' if same else '  DIFFERENT'}", flush=True)


async def server_session(model: str, items: list[dict], max_tokens: int, out) -> None:
    """(d) against the real servers: open the file with the typed region removed, then per word a
    didChange and an inline completion, alternating which server goes first."""
    import tempfile

    from bench_server import Client

    first = items[0]
    text = Path(first["path"]).read_text(encoding="utf-8")
    start = first["start"]
    doc = text[:start] + first["suffix"]  # the function's body removed: the user types it
    with tempfile.TemporaryDirectory(prefix="codedec-bench-suffix-") as d:
        clients = {c: Client(model, Path(d) / f"{c}.jsonl", maxTokens=max_tokens, strategy=c, lineMode="auto")
                   for c in CONDITIONS}
        for c in clients.values():
            await c.start()
        uri = Path(first["path"]).resolve().as_uri()
        try:
            for c in clients.values():
                c.open(uri, doc)
                line0 = doc[:start].count("\n")
                await c.inline(uri, line0, len(doc[:start].rsplit("\n", 1)[-1]), "warmup")
            done = start
            for i, item in enumerate(items):
                piece = item["prefix"][done:]
                before = item["prefix"][:done]
                line, col = before.count("\n"), len(before.rsplit("\n", 1)[-1])
                after = item["prefix"]
                line2, col2 = after.count("\n"), len(after.rsplit("\n", 1)[-1])
                done = len(item["prefix"])
                order = list(CONDITIONS) if i % 2 == 0 else list(reversed(CONDITIONS))
                lat = {}
                for cond in order:
                    clients[cond].insert(uri, line, col, piece)
                    t, _items = await clients[cond].inline(uri, line2, col2, f"s{i}")
                    lat[cond] = (time.perf_counter() - t) * 1000.0
                print(f"  server {i + 1}/{len(items)} latency {lat['plain']:.0f}/{lat['suffix']:.0f} ms", flush=True)
                for cond in CONDITIONS:
                    out.write(json.dumps({"workload": "server", "item": item["id"], "i": i, "condition": cond,
                                          "client_ms": lat[cond]}) + "\n")
        finally:
            for c in clients.values():
                await c.stop()
        events = {c: clients[c].events() for c in CONDITIONS}
    for i, item in enumerate(items):
        for cond in CONDITIONS:
            e = events[cond].get(f"s{i}", {})
            out.write(json.dumps({"workload": "server-events", "item": item["id"], "i": i, "condition": cond,
                                  **{k: e.get(k) for k in ("source", "new_tokens", "forwards", "total_ms", "latency_ms",
                                                           "strategy_stats", "chars")}}) + "\n")


# ------------------------------------------------------------------------------- summary

def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def spread(xs: list[float]) -> str:
    """``median [p10..p90]`` of paired ratios."""
    if not xs:
        return f"{float('nan'):5.2f} [0.00..0.00]"
    return f"{statistics.median(xs):5.2f} [{pct(xs, .1):.2f}..{pct(xs, .9):.2f}]"


def speculation(stats: list[dict]) -> tuple[float, str]:
    """Tokens per forward and the acceptance histogram over the suffix strategy's stats."""
    tok = fw = 0
    hist: dict[str, int] = {}
    for st in stats:
        tok += st.get("tokens", 0)
        fw += st.get("forwards", 0)
        for k, c in (st.get("accept_hist") or {}).items():
            hist[str(k)] = hist.get(str(k), 0) + c
    return tok / max(1, fw), " ".join(f"{k}:{hist[k]}" for k in sorted(hist, key=int))


def summarize(rows: list[dict]) -> list[str]:
    lines = ["workload   n  same  tok/fwd  decode tok/s ratio [p10..p90]  request ratio [p10..p90]  "
             "draft/step  accept histogram (accepted draft tokens: steps)"]
    by = {}
    for r in rows:
        by.setdefault((r["workload"], r["i"]), {})[r["condition"]] = r
    for w in WORKLOADS:
        pairs = [v for (wl, _), v in sorted(by.items()) if wl == w and set(v) == set(CONDITIONS)]
        if not pairs:
            continue
        if w == "server":
            lat = [v["plain"]["client_ms"] / v["suffix"]["client_ms"] for v in pairs
                   if v["plain"]["client_ms"] > 0 and v["suffix"]["client_ms"] > 0]
            ev = {}
            for r in rows:
                if r["workload"] == "server-events":
                    ev.setdefault(r["i"], {})[r["condition"]] = r
            same = sum(1 for e in ev.values() if (e.get("plain") or {}).get("chars") == (e.get("suffix") or {}).get("chars"))
            per_fwd, h = speculation([(e.get("suffix") or {}).get("strategy_stats") or {} for e in ev.values()])
            n_model = sum(1 for e in ev.values() if (e.get("plain") or {}).get("source") == "model")
            lines.append(f"{w:10s} {len(pairs):2d} {same:3d}/{len(pairs):<3d} {per_fwd:5.2f}   "
                         f"   (client latency ratio)              {spread(lat)}  ({n_model} answered by the model)  {h}")
            continue
        dec, req, draft_share = [], [], []
        same = sum(1 for v in pairs if v["suffix"].get("same"))
        for v in pairs:
            p, s = v["plain"], v["suffix"]
            pd, sd = p["total_ms"] - p["prefill_ms"], s["total_ms"] - s["prefill_ms"]
            if p["tokens"] >= 2 and s["tokens"] >= 2 and pd > 0 and sd > 0:
                dec.append((s["tokens"] / sd) / (p["tokens"] / pd))
            if p["total_ms"] > 0 and s["total_ms"] > 0:
                req.append(p["total_ms"] / s["total_ms"])
            st = s.get("strategy_stats") or {}
            if st.get("steps") and s["tokens"] and sd > 0:
                draft_share.append((st["draft_ms"] / st["steps"]) / (sd / max(1, st["forwards"])))
        per_fwd, h = speculation([v["suffix"].get("strategy_stats") or {} for v in pairs])
        lines.append(
            f"{w:10s} {len(pairs):2d} {same:3d}/{len(pairs):<3d} {per_fwd:5.2f}   {spread(dec)}"
            f"             {spread(req)}"
            f"        {100 * statistics.median(draft_share) if draft_share else 0:4.1f} %   {h}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--package", default="click")
    ap.add_argument("--n-humaneval", type=int, default=20)
    ap.add_argument("--n-edit", type=int, default=12)
    ap.add_argument("--n-repobench", type=int, default=16)
    ap.add_argument("--n-typing", type=int, default=30, help="requests of the typing session")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write <out>.rows.jsonl.gz")
    ap.add_argument("--summarize", default=None, metavar="ROWS")
    args = ap.parse_args()
    if args.summarize:
        with gzip.open(args.summarize, "rt") as f:
            print("\n".join(summarize([json.loads(x) for x in f])))
        return
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, dtype=getattr(torch, args.dtype))
    services = {c: CompletionService(engine=Engine(loaded), threads=args.threads, max_cached_documents=64)
                for c in CONDITIONS}
    wanted = args.workloads.split(",")
    out_path = Path(f"{args.out}.rows.jsonl.gz") if args.out else Path("/tmp/bench_suffix.rows.jsonl.gz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"# bench_suffix: {args.model} {args.dtype}, {args.threads} threads, package {args.package}, "
          f"max_tokens {args.max_tokens}; torch {torch.__version__}", flush=True)
    try:
        with gzip.open(out_path, "wt") as out:
            for cond, svc in services.items():  # warm both (first-call costs out of the measurements)
                request(svc, "file:///warm", {"id": "warm", "prefix": "def add(a, b):\n    return"}, cond, 8, "w")
            if "humaneval" in wanted:
                from codedec_eval.humaneval import load_humaneval

                items = [{"id": p.task_id, "prefix": p.prompt} for p in load_humaneval()[: args.n_humaneval]]
                run_workload("humaneval", items, services, args, out)
            if "edit" in wanted:
                run_workload("edit", edit_sessions(args.package, args.n_edit, args.seed), services, args, out)
            if "repobench" in wanted:
                run_workload("repobench", repobench_records(args.package, args.n_repobench, args.seed), services,
                             args, out)
            session = [dict(r, doc="session") for r in typing_session(args.package, args.seed, args.n_typing)]
            if "typing" in wanted:
                run_workload("typing", session, services, args, out)
            if "server" in wanted:
                for svc in services.values():
                    svc.close()
                import asyncio

                asyncio.run(server_session(args.model, session, args.max_tokens, out))
    finally:
        for svc in services.values():
            svc.close()
    with gzip.open(out_path, "rt") as f:
        print("\n".join(summarize([json.loads(x) for x in f])))
    print(f"# rows: {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
