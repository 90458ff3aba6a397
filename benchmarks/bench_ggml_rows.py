"""What verifying k draft tokens in one forward costs, llama.cpp against codedec q4 (E14).

Speculation pays when a forward over k draft rows costs little more than a forward over one,
and it is lossless only when each of those rows gives the logits a one-token forward would.
This measures both for llama.cpp (llama-cpp-python's bindings to the library, the embedded
model's GGUF, 2 threads) — the question being whether codedec could run its speculation on
llama.cpp's kernels instead of torch's — and, in the same run, the cost for codedec q4
(``tree_forward`` over a chain of k tokens, the path SuffixDecoding verifies drafts with).

After ``--context`` tokens of a real source file (a module of the pip-installed ``rich``, tokenized
by the model's tokenizer, the same ids to both), the next k tokens of that file are fed as one
batch with logits for every row, k = 1, 2, 4, 8; then undone. Per k: median ms over ``--repeats``
runs, the two sides alternating, and the median of the paired per-run ratios to k = 1 of the same
side [min..max]. For llama.cpp also: are the k rows bit-equal to the rows of k one-token decodes,
the largest absolute logit difference, and on how many rows the argmax (the greedy token) differs.

    .venv/bin/python benchmarks/bench_ggml_rows.py --context 600,1850   # needs make bench-llamacpp
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_vs_llamacpp import llama_and_gguf

from codedec.cache import KVCache
from codedec.forward import prefill, tree_forward
from codedec.loading import load_model

KS = (1, 2, 4, 8)


class Rows:
    """llama.cpp's context over one sequence: ``feed`` k tokens at positions ``start..`` with logits
    for every row (returned [k, V] as float32), ``undo`` removes positions >= ``start``."""

    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=True, verbose=False)
        self.ctx = self.llm._ctx.ctx
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = self.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)

    def feed(self, ids: list[int], start: int, logits: bool = True) -> np.ndarray | None:
        b = self.batch
        b.n_tokens = len(ids)
        for i, t in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, start + i, 1, logits
            b.seq_id[i][0] = 0
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        if not logits:
            return None
        return np.stack([np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                         for i in range(len(ids))]).astype(np.float32)  # [k, V], copied

    def prefill(self, ids: list[int]) -> None:
        for s in range(0, len(ids), 512):
            self.feed(ids[s:s + 512], s, logits=False)

    def undo(self, start: int) -> None:
        self.lib.llama_memory_seq_rm(self.mem, 0, start, -1)


def source_ids(tokenizer, n: int) -> list[int]:
    """``n`` + 8 token ids of rich's longest modules, concatenated (real code, deterministic)."""
    spec = importlib.util.find_spec("rich")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package rich is not installed (make install installs it)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py"), key=lambda p: -p.stat().st_size)
    ids: list[int] = []
    for f in files:
        ids += tokenizer.encode(f.read_text(encoding="utf-8"), add_special_tokens=False)
        if len(ids) >= n + max(KS):
            return ids[:n + max(KS)]
    raise SystemExit("not enough source text")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", default="600,1850")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llama_cpp, gguf = llama_and_gguf()
    torch.set_num_threads(args.threads)
    loaded = load_model("smollm2", precision="q4")
    model = loaded.model
    rows = Rows(str(gguf), args.threads)
    print(f"# bench_ggml_rows: {gguf.name}; llama.cpp {llama_cpp.__version__} vs codedec q4 tree_forward; "
          f"{args.threads} threads; torch {torch.__version__}; {args.repeats} paired runs per k", flush=True)
    for n in [int(c) for c in args.context.split(",")]:
        ids = source_ids(loaded.tokenizer, n)
        ctx, nxt = ids[:n], ids[n:]
        rows.prefill(ctx)
        cache = KVCache(model.config)
        prefill(model, cache, ctx)
        single = []  # llama.cpp's rows one token at a time: the reference for exactness
        for i in range(max(KS)):
            single.append(rows.feed([nxt[i]], n + i)[0])
        rows.undo(n)
        times: dict[tuple[str, int], list[float]] = {}
        sides = ("llama.cpp", "codedec-q4")
        for r in range(args.repeats):
            for k in KS:
                for side in sides if r % 2 == 0 else sides[::-1]:
                    t0 = time.perf_counter()
                    if side == "llama.cpp":
                        rows.feed(nxt[:k], n)
                    else:
                        tree_forward(model, cache, nxt[:k], list(range(-1, k - 1)))  # a chain of k
                    times.setdefault((side, k), []).append((time.perf_counter() - t0) * 1000.0)
                    rows.undo(n)
                    cache.crop(n)
        print(f"context {n}:")
        for side in sides:
            base = times[(side, 1)]
            for k in KS:
                t = times[(side, k)]
                ratio = [a / b for a, b in zip(t, base, strict=True)]
                extra = ""
                if side == "llama.cpp":
                    got = rows.feed(nxt[:k], n)
                    rows.undo(n)
                    ref = np.stack(single[:k])
                    diff = float(np.abs(got - ref).max())
                    flips = int((got.argmax(-1) != ref.argmax(-1)).sum())
                    extra = (f"  rows bit-equal to one-token decodes: {bool(np.array_equal(got, ref))}, "
                             f"max |logit diff| {diff:.3f}, argmax differs on {flips}/{k} rows")
                print(f"  {side:10s} k={k}: {statistics.median(t):6.1f} ms  k/1 {statistics.median(ratio):.2f} "
                      f"[{min(ratio):.2f}..{max(ratio):.2f}]{extra}", flush=True)
        rows.undo(0)


if __name__ == "__main__":
    main()
