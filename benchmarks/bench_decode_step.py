"""Where a q4 decode forward's time goes, and variants of it, tried and kept or not (E14).

1. ``profile``: torch's profiler over 5 one-token forwards (the lean forward, q4) after ``--context``
   cached tokens: operator self-time by kind, and the wall time per forward.
2. ``attention``: the lean forward with SDPA replaced by two grouped matmuls (queries of a K/V head
   packed as rows, softmax between) — paired per call against SDPA, 1/2/4/8 new tokens.
3. ``int4``: the memory read bandwidth (a sum over 256 MB) against the rate at which torch's int4
   CPU kernel goes through 4-bit weights, per projection shape of the model, 1/4/16 rows; beside
   it ``codedec.q8kernel`` on the same shapes as Q4_1 blocks (time and ratio to torch's).
4. ``compile``: the layer math around the cache write and SDPA compiled with ``torch.compile``
   (inductor, dynamic shapes) — compile time, then paired per call against transformers' forward
   and against the lean eager forward, 1/4/16 new tokens; the largest logit difference.
5. ``plans``: the lean forward with and without the direct int4 pass per layer
   (``fastpath.use_int4_plans``), paired per call, 1/2/4/16 new tokens (kept: the default).
6. ``sdpa``: SDPA alone for one query row over one layer's cached keys/values (the cache after
   ``--context`` tokens): warm (the same call repeated) and cold (a 64 MB read between calls, as
   a forward's weights evict them), in fp32 as stored and with queries/keys/values in bf16 and fp16.
7. ``q8``: the lean forward with q4 decode rows on torch's int4 kernel (``int4``), on
   ``codedec.q8kernel``'s products op by op (``q8``: 8-bit activations, integer dot products, as
   llama.cpp) and with whole layers in its two C++ calls around attention (``fused``:
   ``q8kernel.layer_pre`` / ``layer_post``), paired per call, 1/2/4/16 new tokens (kept: fused,
   the default where the kernel builds).

    .venv/bin/python benchmarks/bench_decode_step.py --what profile,attention,compile --context 600,1850
    .venv/bin/python benchmarks/bench_decode_step.py --what int4
    .venv/bin/python benchmarks/bench_decode_step.py --what plans --context 600,1850
    .venv/bin/python benchmarks/bench_decode_step.py --what sdpa --context 600,1850
    .venv/bin/python benchmarks/bench_decode_step.py --what q8 --context 600,1850
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import rotate_half

from codedec import fastpath, q8kernel
from codedec import forward as forward_mod
from codedec.cache import KVCache
from codedec.forward import prefill, tree_forward
from codedec.loading import load_model


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def paired(label: str, sides: dict, n: int, repeats: int = 11) -> dict:
    """Each side (name -> callable that runs one forward and undoes it) in turn, ``repeats``
    times; print medians and the median ratio of each side to the first [min..max]."""
    times = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            times[k].append(timed(fn))
    base = next(iter(sides))
    cols = "  ".join(f"{k} {statistics.median(v):6.1f} ms" for k, v in times.items())
    ratios = "  ".join(f"{k}/{base} {statistics.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]"
                       for k in list(sides)[1:] for r in [[a / b for a, b in zip(times[k], times[base], strict=True)]])
    print(f"{label}  n {n:2d}  {cols}  {ratios}", flush=True)
    return times


def grouped_matmul_attention(q, keys, values, attn_mask=None, scale=None, enable_gqa=False):
    """SDPA's result for [1, Hq, P, D] queries over [1, Hkv, T, D] keys/values, as two matmuls."""
    b, hq, p, d = q.shape
    hkv = keys.shape[1]
    s = torch.matmul(q.reshape(b, hkv, hq // hkv * p, d), keys.transpose(-1, -2)).mul_(scale)  # [1, Hkv, G*P, T]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape).masked_fill(~attn_mask, float("-inf"))
        s = s.view(b, hkv, hq // hkv, p, -1).add_(attn_mask.view(1, 1, 1, p, -1)).view(b, hkv, hq // hkv * p, -1)
    return torch.matmul(torch.softmax(s, -1), values).view(b, hq, p, d)


def run_profile(model, cache) -> None:
    from torch.profiler import ProfilerActivity, profile

    keep = len(cache)
    for _ in range(3):
        tree_forward(model, cache, [200], [-1])
        cache.crop(keep)
    wall = []
    for _ in range(11):
        wall.append(timed(lambda: tree_forward(model, cache, [200], [-1])))
        cache.crop(keep)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            tree_forward(model, cache, [200], [-1])
            cache.crop(keep)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 5 / 1000.0
    print(f"profile  context {keep}: wall {statistics.median(wall):.1f} ms per forward (median of 11), "
          f"operator self-time {total:.1f} ms per forward", flush=True)
    for e in events[:8]:
        print(f"  {e.key:52s} {e.self_cpu_time_total / 5000.0:6.2f} ms  {100 * e.self_cpu_time_total / 5000.0 / total:5.1f} %"
              f"  {e.count // 5:5d} calls", flush=True)
    rest = sum(e.count for e in events[8:]) // 5
    print(f"  {'(other operators)':52s} {sum(e.self_cpu_time_total for e in events[8:]) / 5000.0:6.2f} ms"
          f"          {rest:5d} calls", flush=True)


def toggled(toggle, flag, model, cache, ids: list[int], parents: list[int]):
    """A side for ``paired``: ``toggle(model, flag)``, one ``tree_forward`` of ``ids``, undone."""
    keep = len(cache)

    def go():
        toggle(model, flag)
        tree_forward(model, cache, ids, parents)
        cache.crop(keep)
    return go


def run_plans(model, cache) -> None:
    """One forward of n new tokens through the lean forward with the direct int4 layer pass and
    through its generic loop, alternating; paired per call (``paired``, 15 repeats)."""
    for n in (1, 2, 4, 16):
        ids, parents = list(range(200, 200 + n)), list(range(-1, n - 1))
        sides = {"modules": toggled(fastpath.use_int4_plans, False, model, cache, ids, parents),
                 "direct": toggled(fastpath.use_int4_plans, True, model, cache, ids, parents)}
        paired(f"plans context {len(cache)}", sides, n, repeats=15)
    fastpath.use_int4_plans(model, True)


def run_q8(model, cache) -> None:
    """One forward of n new tokens with q4 decode rows on torch's int4 kernel and on the q8
    kernel, alternating; paired per call (``paired``, 15 repeats)."""
    if not q8kernel.available():
        print(f"q8: not available here ({q8kernel.why_unavailable()})", flush=True)
        return
    def switch(_model, how: str) -> None:
        q8kernel.use(how != "int4")
        q8kernel.use_fused(how == "fused")

    for n in (1, 2, 4, 16):
        ids, parents = list(range(200, 200 + n)), list(range(-1, n - 1))
        sides = {how: toggled(switch, how, model, cache, ids, parents) for how in ("int4", "q8", "fused")}
        paired(f"q8 context {len(cache)}", sides, n, repeats=15)
    switch(model, "fused")


def run_attention(model, cache) -> None:
    keep = len(cache)
    real = F.scaled_dot_product_attention
    for n in (1, 2, 4, 8):
        ids, parents = list(range(200, 200 + n)), list(range(-1, n - 1))

        def side(attention, ids=ids, parents=parents):
            def go():
                F.scaled_dot_product_attention = attention
                try:
                    tree_forward(model, cache, ids, parents)
                finally:
                    F.scaled_dot_product_attention = real
                    cache.crop(keep)
            return go
        paired(f"attention context {keep}", {"sdpa": side(real), "matmul": side(grouped_matmul_attention)}, n)


def run_sdpa(model, cache) -> None:
    """``sdpa`` (module docstring): median us per call of 200, warm and cold, per dtype."""
    keys, values = cache.layer_tensors()[0]  # [1, Hkv, T, D], views of the cache's buffers
    attn = model.model.layers[0].self_attn
    q = torch.randn(1, model.config.num_attention_heads, 1, keys.shape[-1])
    evict = torch.randn(16 * 1024 * 1024)  # 64 MB, more than this CPU's caches

    def per_call(q, k, v, cold: bool) -> float:
        times = []
        for _ in range(200):
            if cold:
                evict.sum()
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, scale=attn.scaling, enable_gqa=True)
            times.append((time.perf_counter() - t) * 1e6)
        return statistics.median(times)

    row = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        k, v = (keys, values) if dtype == torch.float32 else (keys.to(dtype), values.to(dtype))
        qd = q.to(dtype)
        row.append(f"{str(dtype).removeprefix('torch.'):8s} warm {per_call(qd, k, v, False):6.0f} us  "
                   f"cold {per_call(qd, k, v, True):6.0f} us")
    print(f"sdpa  context {len(cache)}, one layer ({keys.numel() * 2 * 4 / 1e6:.2f} MB of fp32 keys+values): "
          + "  |  ".join(row), flush=True)


def compiled_layers(model):
    """(pre, post) compiled: RMSNorm + q/k/v + RoPE before the cache write, o_proj + MLP after SDPA."""
    def pre(x, layer, cos, sin):
        attn, p = layer.self_attn, x.shape[1]
        h = fastpath._rms(x, layer.input_layernorm)
        q = attn.q_proj(h).view(1, p, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(1, p, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(1, p, -1, attn.head_dim).transpose(1, 2)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def post(x, o, layer):
        p, mlp = x.shape[1], layer.mlp
        x = x + layer.self_attn.o_proj(o.transpose(1, 2).reshape(1, p, -1))
        h = fastpath._rms(x, layer.post_attention_layernorm)
        return x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))

    return torch.compile(pre, dynamic=True), torch.compile(post, dynamic=True)


@torch.inference_mode()
def compiled_forward(model, fns, cache, ids, parents_unused=None):
    pre, post = fns
    m, p, t = model.model, len(ids), len(cache)
    x = m.embed_tokens(torch.tensor([ids]))
    cos, sin = m.rotary_emb(x, torch.arange(t, t + p)[None])
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    mask = fastpath._causal(p, t, x.device) if p > 1 else None
    for idx, layer in enumerate(m.layers):
        q, k, v = pre(x, layer, cos, sin)
        keys, values = cache.kv.update(k, v, idx)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=layer.self_attn.scaling,
                                           enable_gqa=True)
        x = post(x, o, layer)
    cache.appended(ids)
    return model.lm_head(fastpath._rms(x, m.norm))[0].float()


def run_compile(model, cache) -> None:
    keep = len(cache)
    fns = compiled_layers(model)
    for n in (1, 4, 16):
        ids, parents = list(range(200, 200 + n)), list(range(-1, n - 1))
        want = tree_forward(model, cache, ids, parents)
        cache.crop(keep)
        t = time.perf_counter()
        got = compiled_forward(model, fns, cache, ids)
        first = time.perf_counter() - t
        cache.crop(keep)
        print(f"compile context {keep}  n {n:2d}: first call {first:.1f} s, largest logit difference from the "
              f"lean forward {float((got - want).abs().max()):.3g}", flush=True)

        def lean(flag, ids=ids, parents=parents):
            return toggled(forward_mod.use_fastpath, flag, model, cache, ids, parents)

        def comp(ids=ids):
            compiled_forward(model, fns, cache, ids)
            cache.crop(keep)
        paired(f"compile context {keep}", {"transformers": lean(False), "lean": lean(True), "compiled": comp}, n)
    forward_mod.use_fastpath(model, None)


def run_int4() -> None:
    big = torch.randn(64 * 1024 * 1024)  # 256 MB
    big.sum()
    t = time.perf_counter()
    for _ in range(5):
        big.sum()
    print(f"int4  memory read bandwidth {5 * big.numel() * 4 / (time.perf_counter() - t) / 1e9:.1f} GB/s "
          f"(sum over 256 MB)", flush=True)
    del big
    # SmolLM2's projections: q|o (576 x 576), k|v (192), gate|up (1536), down (576 x 1536), joint q|k|v,
    # joint gate|up, the lm_head (49152, one of its two int4 products); copies so weights are not cache-resident
    for n, k in ((576, 576), (192, 576), (960, 576), (1536, 576), (3072, 576), (576, 1536), (49152, 576)):
        copies = max(2, (64 << 20) // (n * k // 2))
        weights, blocks = [], []
        q8 = q8kernel.available()
        for _ in range(copies):
            q = torch.randint(0, 16, (n, k), dtype=torch.int32)
            packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            weights.append((packed, torch.randn(k // 32, n, 2).to(torch.bfloat16)))
            if q8:  # the same shape as Q4_1 blocks for codedec.q8kernel
                blocks.append(q8kernel.pack_q4_1(q, torch.rand(n, k // 32), torch.rand(n, k // 32)))
        cols = []
        for rows in (1, 4, 16):
            x = torch.randn(rows, k)
            xb = x.to(torch.bfloat16)
            for _ in range(2):  # the second pass is timed
                t = time.perf_counter()
                for packed, scales in weights:
                    torch._weight_int4pack_mm_for_cpu(xb, packed, 32, scales)
                us = (time.perf_counter() - t) / copies * 1e6
                if q8:
                    t = time.perf_counter()
                    for b in blocks:
                        q8kernel.q4_1_mm(x, b, n)
                    us8 = (time.perf_counter() - t) / copies * 1e6
            cols.append(f"{rows:2d} rows {us:7.0f} us ({n * k / 2 / us / 1e3:4.1f} GB/s of weights)"
                        + (f" q8 {us8:6.0f} us ({us8 / us:.2f}x)" if q8 else ""))
        print(f"int4  {n:5d} x {k:4d}: " + "  ".join(cols), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", default="profile,attention,compile")
    ap.add_argument("--context", default="600,1850")
    ap.add_argument("--precision", default="q4")
    args = ap.parse_args()
    torch.set_num_threads(2)
    what = [w.strip() for w in args.what.split(",")]
    if "int4" in what:
        run_int4()
        what.remove("int4")
    if not what:
        return
    model = load_model("smollm2", precision=args.precision).model
    for ctx in [int(c) for c in args.context.split(",")]:
        cache = KVCache(model.config)
        prefill(model, cache, [100 + (i % 30000) for i in range(ctx)])
        for w in what:
            {"profile": run_profile, "attention": run_attention, "compile": run_compile,
             "plans": run_plans, "sdpa": run_sdpa, "q8": run_q8}[w](model, cache)


if __name__ == "__main__":
    main()
