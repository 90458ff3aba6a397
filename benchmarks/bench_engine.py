"""Engine benchmark on the embedded model: the decode loop vs the pre-E7 loop and HF ``generate()``.

Prints, for one ~500-token prompt taken from a real source file:
0. the per-token overhead of the engine loop (``DecodeState`` + ``PlainStrategy``) against the old
   loop (``legacy_loop.py``): decode ms/token of both in alternating order per run, the median of
   the paired per-run ratios new/old with their spread (target <= 1.03), plus ``forwards`` and
   token identity; ``--loop-model tiny-random`` adds the same on a 2-layer model, where a decode
   step is ~1 ms and the loop's own Python cost is magnified;
1. prefill ms and decode ms/token of our loop and of ``generate()`` (same prompt, same number of
   greedy tokens, ``--repeats`` runs, which one goes first alternating per run), and the median of
   the paired per-run ratios ours/generate with their spread (target <= 1.05) — not a ratio of two
   medians, which can come from different runs and did not reproduce (0.95–1.11 across reruns);
2. time to first token of a cold request vs a repeated request that shares 95 % of its prompt with
   the previous one (prefix reuse; target >= 5x), also as the median of paired per-run ratios.

Absolute times on this 2-core machine are noisy; the ratios are what we quote.

    .venv/bin/python benchmarks/bench_engine.py [--model smollm2] [--tokens 64] [--repeats 5]
        [--loop-repeats 15] [--loop-model tiny-random] [--loop-only]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from legacy_loop import legacy_generate

from codedec.engine import Engine
from codedec.loading import load_model
from codedec.sampling import SamplingParams


def source_prompt(tokenizer, n_tokens: int) -> list[int]:
    text = Path(__file__).resolve().parents[1].joinpath("codedec", "engine.py").read_text()
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < n_tokens:
        ids = (ids * (n_tokens // len(ids) + 1))
    return ids[:n_tokens]


def time_ours(engine: Engine, ids: list[int], n: int) -> tuple[float, float, float]:
    """(prefill ms, ms/token, ttft ms) for one cold greedy run of n tokens."""
    engine.cache.reset()
    m = list(engine.generate(ids, SamplingParams(max_new_tokens=n)))[-1].metrics
    assert m.new_tokens == n, f"generated {m.new_tokens} of {n} tokens"
    return m.prefill_ms, m.ms_per_token, m.ttft_ms


def time_hf(model, ids: list[int], n: int) -> tuple[float, float]:
    """(time to first token ms, ms/token) of ``generate()``: timed runs of 1 and n tokens."""
    x = torch.tensor([ids])

    def run(k: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(x, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)
        return (time.perf_counter() - t) * 1000

    one = run(1)
    full = run(n)
    return one, (full - one) / (n - 1)


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return f"IQR {q[0]:.3f}..{q[2]:.3f}, range {min(values):.3f}..{max(values):.3f}"


def loop_overhead(engine: Engine, ids: list[int], n: int, repeats: int, label: str) -> None:
    """Decode ms/token of the new and the old loop, alternating which goes first; paired ratios."""
    params = SamplingParams(max_new_tokens=n)

    def new() -> tuple[float, list[int], int]:
        engine.cache.reset()
        steps = list(engine.generate(ids, params))
        m = steps[-1].metrics
        return m.ms_per_token, [t for s in steps for t in s.token_ids], m.forwards

    def old() -> tuple[float, list[int]]:
        engine.cache.reset()
        out = list(legacy_generate(engine, ids, params))
        m = out[-1][2]
        return m.ms_per_token, [t for tok, _, _ in out for t in tok]

    new(), old()  # warm-up
    ratios, new_ms, old_ms = [], [], []
    for r in range(repeats):
        if r % 2:
            o, old_ids = old()
            m, new_ids, forwards = new()
        else:
            m, new_ids, forwards = new()
            o, old_ids = old()
        assert new_ids == old_ids, "the new loop must be token-identical to the old one"
        assert len(new_ids) == n
        ratios.append(m / o)
        new_ms.append(m)
        old_ms.append(o)
    med = statistics.median
    print(f"[{label}] loop overhead, {n} greedy tokens x {repeats} paired runs: decode ms/token new "
          f"{med(new_ms):.3f} | old {med(old_ms):.3f}; median of per-run ratios new/old = {med(ratios):.3f} "
          f"({_spread(ratios)}) (target <= 1.03); forwards per completion {forwards} for {n} tokens; "
          "token-identical: yes")
    print(f"  per-run ratios: {' '.join(f'{x:.3f}' for x in ratios)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-repeats", type=int, default=15)
    ap.add_argument("--loop-model", default=None, help="also measure the loop overhead on this model")
    ap.add_argument("--loop-only", action="store_true", help="only the loop-overhead part")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    loaded = load_model(args.model)
    engine = Engine(loaded)
    engine.stop_ids = ()  # same work as generate(min_new_tokens=n): never stop early
    ids = source_prompt(loaded.tokenizer, args.prompt_tokens)
    print(f"model={loaded.name} prompt={len(ids)} tokens, new={args.tokens}, repeats={args.repeats}, "
          f"threads={torch.get_num_threads()}")
    loop_overhead(engine, ids, args.tokens, args.loop_repeats, loaded.name)
    if args.loop_model:
        small = load_model(args.loop_model)
        small_engine = Engine(small)
        small_engine.stop_ids = ()
        loop_overhead(small_engine, source_prompt(small.tokenizer, args.prompt_tokens), args.tokens,
                      args.loop_repeats * 4, small.name)
    if args.loop_only:
        return

    # Warm up both paths once.
    time_ours(engine, ids, 4)
    time_hf(loaded.model, ids, 4)

    ours_prefill, ours_tok, hf_first, hf_tok = [], [], [], []
    for r in range(args.repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate which goes first
            if which == 0:
                p, t, _ = time_ours(engine, ids, args.tokens)
                ours_prefill.append(p)
                ours_tok.append(t)
            else:
                f, ht = time_hf(loaded.model, ids, args.tokens)
                hf_first.append(f)
                hf_tok.append(ht)
    med = statistics.median
    per_run = [o / h for o, h in zip(ours_tok, hf_tok, strict=True)]
    prefill_ratio = [o / h for o, h in zip(ours_prefill, hf_first, strict=True)]
    print(f"prefill {len(ids)} tokens: ours {med(ours_prefill):.0f} ms | generate() first token {med(hf_first):.0f} ms"
          f" | median per-run ratio {med(prefill_ratio):.3f} ({_spread(prefill_ratio)})")
    print(f"decode ms/token: ours {med(ours_tok):.1f} | generate() {med(hf_tok):.1f} | "
          f"median of per-run ratios ours/generate = {med(per_run):.3f} ({_spread(per_run)}) (target <= 1.05)")
    print(f"  per-run ratios: {' '.join(f'{r:.3f}' for r in per_run)}")

    # Prefix reuse: cold request vs a request sharing 95 % of its prompt with the previous one.
    cold, warm = [], []
    shared = int(len(ids) * 0.95)
    for r in range(args.repeats):
        engine.cache.reset()
        cold.append(time_ours(engine, ids, 1)[2])
        edited = ids[:shared] + list(reversed(ids[shared:]))[: len(ids) - shared]
        edited[shared] = (edited[shared] + 1 + r) % len(loaded.tokenizer)  # make sure it differs
        last = list(engine.generate(edited, SamplingParams(max_new_tokens=1)))[-1]
        assert last.metrics.reused_tokens == shared, last.metrics
        warm.append(last.metrics.ttft_ms)
    speedup = [c / w for c, w in zip(cold, warm, strict=True)]
    print(f"time to first token: cold {med(cold):.0f} ms | 95% shared prefix {med(warm):.0f} ms | "
          f"speed-up, median of per-run ratios {med(speedup):.1f}x ({_spread(speedup)}) (target >= 5x)")


if __name__ == "__main__":
    main()
