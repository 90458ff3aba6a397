"""Engine benchmark on the embedded model: our decode loop vs HF ``model.generate()``, side by side.

Prints, for one ~500-token prompt taken from a real source file:
1. prefill ms and decode ms/token of our loop and of ``generate()`` (same prompt, same number of
   greedy tokens, interleaved runs, median of ``--repeats``), and their ratio (target <= 1.05);
2. time to first token of a cold request vs a repeated request that shares 95 % of its prompt with
   the previous one (prefix reuse; target >= 5x).

Absolute times on this 2-core machine are noisy; the ratios are what we quote.

    .venv/bin/python benchmarks/bench_engine.py [--model smollm2] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    loaded = load_model(args.model)
    engine = Engine(loaded)
    engine.stop_ids = ()  # same work as generate(min_new_tokens=n): never stop early
    ids = source_prompt(loaded.tokenizer, args.prompt_tokens)
    print(f"model={loaded.name} prompt={len(ids)} tokens, new={args.tokens}, repeats={args.repeats}, "
          f"threads={torch.get_num_threads()}")

    # Warm up both paths once.
    time_ours(engine, ids, 4)
    time_hf(loaded.model, ids, 4)

    ours_prefill, ours_tok, hf_first, hf_tok = [], [], [], []
    for _ in range(args.repeats):
        p, t, _ = time_ours(engine, ids, args.tokens)
        ours_prefill.append(p)
        ours_tok.append(t)
        f, ht = time_hf(loaded.model, ids, args.tokens)
        hf_first.append(f)
        hf_tok.append(ht)
    med = statistics.median
    print(f"prefill {len(ids)} tokens: ours {med(ours_prefill):.0f} ms | generate() first token {med(hf_first):.0f} ms")
    print(f"decode ms/token: ours {med(ours_tok):.1f} | generate() {med(hf_tok):.1f} | "
          f"ratio ours/generate = {med(ours_tok) / med(hf_tok):.3f} (target <= 1.05)")
    per_run = [o / h for o, h in zip(ours_tok, hf_tok, strict=True)]
    print(f"  per-run ratios: {' '.join(f'{r:.2f}' for r in per_run)}")

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
    print(f"time to first token: cold {med(cold):.0f} ms | 95% shared prefix {med(warm):.0f} ms | "
          f"speed-up {med(cold) / med(warm):.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
