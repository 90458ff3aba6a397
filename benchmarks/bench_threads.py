"""torch threads under contention (issue E11): 1 vs 2 threads, quiet and beside CPU hogs.

For each condition (0, 1 or 2 busy-loop processes beside it), runs a 512-token prefill and 16
decode steps of the model with 1 and with 2 torch threads, alternating, ``--reps`` times; prints
the medians, the paired ratios (2 threads / 1 thread; > 1 means 1 thread is faster) and the
thread count ``codedec.threads.ThreadPolicy`` chooses in that condition.

    .venv/bin/python benchmarks/bench_threads.py [--model smollm2] [--reps 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from codedec.cache import KVCache
from codedec.forward import decode_one, prefill
from codedec.loading import load_model
from codedec.threads import ThreadPolicy


def run(model, ids: list[int], threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    cache = KVCache(model.config)
    t = time.perf_counter()
    prefill(model, cache, ids)
    pre = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(16):
        decode_one(model, cache, ids[i])
    return pre * 1e3, (time.perf_counter() - t) / 16 * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    loaded = load_model(args.model)
    ids = list(range(1000, 1512))
    run(loaded.model, ids[:64], 2)  # warm-up
    for hogs in (0, 1, 2):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            policy = ThreadPolicy(2)
            time.sleep(1.0)
            chosen = policy.choose()
            res: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
            for r in range(args.reps):
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    res[n].append(run(loaded.model, ids, n))
        finally:
            for p in procs:
                p.kill()
                p.wait()
        pre_ratio = [b[0] / a[0] for a, b in zip(res[1], res[2], strict=True)]
        dec_ratio = [b[1] / a[1] for a, b in zip(res[1], res[2], strict=True)]
        print(f"hogs={hogs}: policy chose {chosen} thread(s) (others used {policy.others_cores:.2f} cores)")
        for n in (1, 2):
            print(f"  {n} thread(s): prefill 512 p50 {statistics.median(x[0] for x in res[n]):.0f} ms, "
                  f"decode p50 {statistics.median(x[1] for x in res[n]):.1f} ms/token")
        print(f"  paired 2/1 ratio: prefill median {statistics.median(pre_ratio):.2f} "
              f"[{min(pre_ratio):.2f}..{max(pre_ratio):.2f}], decode median {statistics.median(dec_ratio):.2f} "
              f"[{min(dec_ratio):.2f}..{max(dec_ratio):.2f}] (n={args.reps})", flush=True)


if __name__ == "__main__":
    main()
