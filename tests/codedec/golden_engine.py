"""Golden outputs of the decode loop, recorded from the engine as it was before the strategy
refactor (E7, commit 946be5c), so the plain strategy can be checked token-identical to it.

Run ``python tests/codedec/golden_engine.py`` to re-record ``data/engine_golden.json`` with the
current code; only do that for a deliberate change of decoding behaviour, and say why in the
commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("data") / "engine_golden.json"
PROMPTS = (
    "def add(a, b):\n    return a + b\n\n\ndef main():\n",
    "import os\n\nclass Config:\n    def __init__(self, path):\n        self.",
)
# (name, sampling kwargs): greedy and seeded sampling with the filters.
CASES = (
    ("greedy", {}),
    ("t1-s3", {"temperature": 1.0, "seed": 3}),
    ("t0.8-k20-s11", {"temperature": 0.8, "top_k": 20, "seed": 11}),
    ("t1.2-p0.9-s5", {"temperature": 1.2, "top_p": 0.9, "seed": 5}),
)
TINY_MODELS = ((0, 2), (1, 4), (2, 2))  # (seed, kv_heads): GQA and MHA


def record(loaded, prompts, n_tokens: int, engine_factory, run) -> dict:
    """``run(engine, ids, params) -> token ids`` for every prompt x case."""
    from codedec.sampling import SamplingParams

    out = {}
    engine = engine_factory(loaded)
    for p, prompt in enumerate(prompts):
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=False)
        for name, kw in CASES:
            out[f"{p}/{name}"] = run(engine, ids, SamplingParams(max_new_tokens=n_tokens, **kw))
    return out


PROCESSOR_CASES = (("rpg,grammar", {}), ("rpg,grammar", {"temperature": 0.7, "seed": 2}))
PROCESSOR_PREFIX = "def fizzbuzz(n):\n    for i in range(1, n + 1):\n        if i % 15 == 0:\n"


def record_processors(loaded, engine_factory) -> dict:
    """Greedy/sampled completions with grammar + RPG (+ healing) on every step, the chain built as
    the service builds it (the original recording went through the pre-E7 engine's text-context
    arguments)."""
    from codedec.prepare import prepare

    engine = engine_factory(loaded)
    out = {}
    for names, kw in PROCESSOR_CASES:
        p = prepare(engine, PROCESSOR_PREFIX, "\n", max_tokens=32, decoding=names, block_end=False, **kw)
        out[f"{names}/{kw.get('seed', 'greedy')}"] = [
            t for s in engine.generate(p.prompt_ids, p.params, p.chain) for t in s.token_ids
        ]
    return out


def main() -> None:
    import torch

    from codedec.engine import Engine
    from codedec.loading import build_tiny_random, load_model

    torch.set_num_threads(1)

    def run(engine, ids, params):
        return [t for s in engine.generate(ids, params) for t in s.token_ids]

    golden = {"tiny": {}, "smollm2": {}}
    for seed, kv in TINY_MODELS:
        loaded = build_tiny_random(seed=seed, num_key_value_heads=kv)
        golden["tiny"][f"{seed}-{kv}"] = record(loaded, PROMPTS, 32, Engine, run)
    smol = load_model("smollm2")
    golden["smollm2"] = record(smol, PROMPTS, 24, Engine, run)
    golden["smollm2-processors"] = record_processors(smol, Engine)
    GOLDEN.parent.mkdir(exist_ok=True)
    lines = ",\n".join(
        f'  "{group}/{case}": {json.dumps(ids)}' for group, cases in golden.items() for case, ids in cases.items()
    )
    GOLDEN.write_text("{\n" + lines + "\n}\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
    main()
