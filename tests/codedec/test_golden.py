"""The plain strategy is token-identical to the decode loop before the E7 refactor (golden ids
recorded by ``golden_engine.py`` from the old engine)."""

from __future__ import annotations

import json

import pytest
import torch
from golden_engine import CASES, GOLDEN, PROCESSOR_CASES, PROCESSOR_PREFIX, PROMPTS, TINY_MODELS

from codedec.engine import Engine
from codedec.sampling import SamplingParams
from codedec.strategy import PlainStrategy

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(tree: dict, prefix: str = "") -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


WANT = _flat(json.loads(GOLDEN.read_text()))


def _run(engine, ids, params, chain=()):
    return [t for s in engine.generate(ids, params, chain, strategy=PlainStrategy()) for t in s.token_ids]


def _check(loaded, group, n_tokens):
    engine = Engine(loaded)
    for p, prompt in enumerate(PROMPTS):
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=False)
        for name, kw in CASES:
            got = _run(engine, ids, SamplingParams(max_new_tokens=n_tokens, **kw))
            assert got == WANT[f"{group}/{p}/{name}"], f"{group} prompt {p} {name}"


@pytest.mark.parametrize(("seed", "kv_heads"), TINY_MODELS)
def test_plain_strategy_matches_golden_tiny(make_tiny, seed, kv_heads):
    _check(make_tiny(seed=seed, num_key_value_heads=kv_heads), f"tiny/{seed}-{kv_heads}", 32)


def test_plain_strategy_matches_golden_smollm2(smollm2):
    _check(smollm2, "smollm2", 24)


def test_processor_chain_matches_golden_smollm2(smollm2):
    """grammar + rpg (+ healing) built by the service's processor factory, run by the engine."""
    from codedec.prepare import prepare

    engine = Engine(smollm2)
    for names, kw in PROCESSOR_CASES:
        prepared = prepare(engine, PROCESSOR_PREFIX, "\n", max_tokens=32, decoding=names, block_end=False, **kw)
        got = _run(engine, prepared.prompt_ids, prepared.params, prepared.chain)
        assert got == WANT[f"smollm2-processors/{names}/{kw.get('seed', 'greedy')}"], names


def test_golden_catches_a_changed_loop(make_tiny):
    """The comparison can fail: a loop that skips the processors' first row differs."""
    seed, kv = TINY_MODELS[0]
    loaded = make_tiny(seed=seed, num_key_value_heads=kv)
    ids = loaded.tokenizer.encode(PROMPTS[0], add_special_tokens=False)

    class Biased(PlainStrategy):
        def step(self, state):
            logits = state.feed().clone()
            logits[int(torch.argmax(logits))] = float("-inf")  # never the top token
            state.logits = logits
            super().step(state)

    got = [t for s in Engine(loaded).generate(ids, SamplingParams(max_new_tokens=32), strategy=Biased())
           for t in s.token_ids]
    assert got != WANT[f"tiny/{seed}-{kv}/0/greedy"]
