"""What one forward costs by how many new tokens it feeds — the price of verifying a draft (E8).

SmolLM2 after 600 cached tokens, 2 threads: median of 9 ``tree_forward`` calls over a chain of n
new tokens (n = 1, 2, 4, 8, 16, 32), in fp32 and bf16, each as a multiple of the 1-token forward;
then one of the model's MLP-sized layers alone (576 -> 1536, fp32 ``F.linear``) for 1, 2, 4 and 8
rows, median microseconds of 400 calls.

``--precisions fp32,q4 --context 600,1850``: the same forwards for each precision of
``load_model`` (E14: q4 = the GGUF's 4-bit layers on the int4 kernel) after each context length,
the precisions measured in turn call by call (side by side), and the median of the paired
per-call ratios q4 / fp32 with [min..max]. ``--fastpath``: each precision through
``codedec.fastpath``'s lean forward and through transformers' forward, paired the same way.
Two columns that are not ``load_model`` precisions, for the choices E14 rejected: ``bf16`` (the
dequantized weights and the computation in bf16) and ``int8wo`` (int8 weight-only: each linear
layer's fp32 weight rounded per output row to int8, torch's ``_weight_int8pack_mm`` — what
torchao's ``Int8WeightOnlyConfig`` runs in eager mode on CPU; the lm_head included).

    .venv/bin/python benchmarks/bench_forward_cost.py
    .venv/bin/python benchmarks/bench_forward_cost.py --precisions fp32,q4 --context 600,1850
    .venv/bin/python benchmarks/bench_forward_cost.py --precisions q4 --fastpath --context 600,1850
    .venv/bin/python benchmarks/bench_forward_cost.py --precisions fp32,bf16,int8wo,q4 --context 600,1850
"""

from __future__ import annotations

import statistics
import time

import torch

from codedec import forward as forward_mod
from codedec.cache import KVCache
from codedec.forward import prefill, tree_forward
from codedec.loading import load_model

SIZES = (1, 2, 4, 8, 16, 32)


class Int8WeightOnly(torch.nn.Module):
    """A linear layer with its weight [N, K] rounded per output row to int8 (scale = the row's
    max |w| / 127); forward: ``torch._weight_int8pack_mm`` (activations in their own dtype)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(1).clamp_min(1e-12) / 127  # [N]
        self.q = torch.round(w / scale[:, None]).to(torch.int8)  # [N, K]
        self.scale = scale
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.q, self.scale.to(x.dtype))
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def load_side(precision: str):
    """The model of one column: a ``load_model`` precision, ``bf16`` or ``int8wo`` (module docstring)."""
    if precision == "bf16":
        return load_model("smollm2", dtype=torch.bfloat16, precision="fp32").model
    if precision == "int8wo":
        model = load_model("smollm2", precision="fp32").model
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(parent, name, Int8WeightOnly(child))
        return model
    return load_model("smollm2", precision=precision).model


def by_precision(precisions: list[str], contexts: list[int], fastpath: bool = False) -> None:
    """Forwards of n new tokens per precision after each context, interleaved; paired ratios
    against the first column. ``fastpath``: each precision twice, through ``codedec.fastpath``'s
    lean forward and through transformers' forward (``<precision>-hf``), the same model and cache."""
    models = {p: load_side(p) for p in precisions}
    sides = {}  # column -> (precision, lean forward?)
    for p in precisions:
        sides[p] = (p, True)
        if fastpath:
            sides[f"{p}-hf"] = (p, False)
    if not fastpath:
        sides = {p: (p, None) for p in precisions}  # whatever forward.py picks
    for ctx in contexts:
        caches = {}
        for p, model in models.items():
            caches[p] = KVCache(model.config)
            prefill(model, caches[p], [100 + (i % 30000) for i in range(ctx)])
        for n in SIZES:
            times: dict[str, list[float]] = {s: [] for s in sides}
            for _ in range(9):
                for side, (p, lean) in sides.items():
                    model, cache = models[p], caches[p]
                    if lean is not None:
                        forward_mod.use_fastpath(model, lean)
                    keep = len(cache)
                    t = time.perf_counter()
                    tree_forward(model, cache, list(range(200, 200 + n)), list(range(-1, n - 1)))
                    times[side].append((time.perf_counter() - t) * 1000.0)
                    cache.crop(keep)
            base = next(iter(sides))
            cols = "  ".join(f"{s} {statistics.median(times[s]):6.1f} ms" for s in sides)
            ratios = "  ".join(
                f"{s}/{base} {statistics.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]"
                for s in list(sides)[1:] for r in [[a / b for a, b in zip(times[s], times[base], strict=True)]])
            print(f"context {ctx:5d}  n {n:2d}  {cols}  {ratios}", flush=True)
        for model in models.values():
            forward_mod.use_fastpath(model, None)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precisions", default=None, help="e.g. fp32,q4: compare load_model "
                    "precisions (also bf16, int8wo: see the module docstring)")
    ap.add_argument("--context", default="600", help="cached tokens before the forward (comma-separated)")
    ap.add_argument("--fastpath", action="store_true", help="with --precisions: each precision through "
                    "codedec.fastpath's lean forward and through transformers' forward (<precision>-hf)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.precisions:
        by_precision([p.strip() for p in args.precisions.split(",")], [int(c) for c in args.context.split(",")],
                     args.fastpath)
        return
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model("smollm2", dtype=dtype, precision="fp32").model
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
