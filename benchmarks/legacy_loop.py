"""The decode loop as it was before the E7 refactor (``Engine._loop`` at commit 946be5c), kept
importable only so ``bench_engine.py`` can measure the new loop's per-token overhead against it
side by side. Remove it once E7 has landed and its figure is recorded in RESULTS.md.

Same components as today (detokenizer, stopper, sampling, processor chain); what differs is the
loop: local variables and one ``decode_one`` per token instead of ``DecodeState`` + a strategy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from codedec.cache import KVCache
from codedec.detokenize import IncrementalDetokenizer
from codedec.forward import decode_one, prefill
from codedec.metrics import RequestMetrics
from codedec.processors import ProcessorChain
from codedec.sampling import SamplingParams, make_generator, sample
from codedec.stopping import TextStopper


def legacy_generate(engine, prompt_ids: list[int], params: SamplingParams, chain: ProcessorChain | None = None,
                    cache: KVCache | None = None) -> Iterator[tuple[list[int], str, RequestMetrics]]:
    """Yield (token ids, text delta, metrics) per token, as the old loop did (greedy/sampled,
    stop ids/strings, single-line; no time budget, no cancellation, no PIE)."""
    chain = chain or ProcessorChain()
    cache = cache if cache is not None else engine.cache
    t0 = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - t0) * 1000.0

    metrics = RequestMetrics(prompt_tokens=len(prompt_ids))
    stop_ids = set(engine.stop_ids) | set(params.stop_token_ids)
    detok = IncrementalDetokenizer(engine.vocab)
    stopper = TextStopper(params.stop_strings, params.single_line)
    generator = make_generator(params, engine.model.device)
    heal_text = params.skip_text
    kept = cache.reuse(prompt_ids)
    metrics.reused_tokens = kept
    logits = prefill(engine.model, cache, prompt_ids[kept:])  # [V]
    metrics.prefill_ms = elapsed()
    shown = 0
    for index in range(params.max_new_tokens):
        row = chain(logits.unsqueeze(0))  # [1, V]
        token = int(sample(row, params, generator)[0])
        if index == 0:
            metrics.ttft_ms = elapsed()
        if token in stop_ids:
            break
        chain.advance([token])
        detok.push([token])
        metrics.new_tokens += 1
        full = detok.text
        visible = full[len(heal_text) :] if full.startswith(heal_text) else ""
        check = stopper.check(visible)
        delta = visible[shown : check.safe_len]
        shown = max(shown, check.safe_len)
        metrics.total_ms = elapsed()
        yield [token], delta, metrics
        if check.stopped:
            break
        if index + 1 < params.max_new_tokens:
            logits = decode_one(engine.model, cache, token)
    metrics.total_ms = elapsed()
