"""What one forward costs by how many new tokens it feeds — the price of verifying a draft (E8).

SmolLM2 after 600 cached tokens, 2 threads: median of 9 ``tree_forward`` calls over a chain of n
new tokens (n = 1, 2, 4, 8, 16, 32), in fp32 and bf16, each as a multiple of the 1-token forward;
then one of the model's MLP-sized layers alone (576 -> 1536, fp32 ``F.linear``) for 1, 2, 4 and 8
rows, median microseconds of 400 calls.

    .venv/bin/python benchmarks/bench_forward_cost.py
"""

from __future__ import annotations

import statistics
import time

import torch

from codedec.cache import KVCache
from codedec.forward import prefill, tree_forward
from codedec.loading import load_model

SIZES = (1, 2, 4, 8, 16, 32)


def main() -> None:
    torch.set_num_threads(2)
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model("smollm2", dtype=dtype).model
        cache = KVCache(model.config)
        prefill(model, cache, list(range(100, 700)))
        ms = {}
        for n in SIZES:
            times = []
            for _ in range(9):
                keep = len(cache)
                t = time.perf_counter()
                tree_forward(model, cache, list(range(200, 200 + n)), list(range(-1, n - 1)))
                times.append((time.perf_counter() - t) * 1000.0)
                cache.crop(keep)
            ms[n] = statistics.median(times)
        print(f"{str(dtype):15s} " + "  ".join(f"{n}: {ms[n]:6.1f} ms ({ms[n] / ms[1]:.2f}x)" for n in SIZES))
    weight = torch.randn(1536, 576)
    row = []
    for n in (1, 2, 4, 8):
        x = torch.randn(n, 576)
        for _ in range(30):
            torch.nn.functional.linear(x, weight)
        times = []
        for _ in range(400):
            t = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            times.append((time.perf_counter() - t) * 1e6)
        row.append(f"{n} rows {statistics.median(times):6.1f} us")
    print("fp32 linear 576->1536: " + "  ".join(row))


if __name__ == "__main__":
    main()
