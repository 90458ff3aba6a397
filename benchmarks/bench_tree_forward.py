"""Tree-forward exactness on a real model: one ``tree_forward`` over a draft tree vs a sequential
decode along every node's path (``codedec.forward``; the claim of issue E7).

For a chain, a star and random trees (up to ``--nodes`` nodes) of random draft tokens after a
code prompt, prints per tree the largest absolute logit difference between row i of the tree
forward and the logits a token-by-token decode of node i's path gives, and the overall maximum.
fp32 on the CPU; the tests hold it to 1e-4.

    .venv/bin/python benchmarks/bench_tree_forward.py [--model smollm2] [--nodes 64] [--trees 3]
"""

from __future__ import annotations

import argparse
import random

import torch

from codedec.cache import KVCache
from codedec.draft_tree import depths
from codedec.forward import prefill, tree_forward, tree_rows_sequential
from codedec.loading import load_model

PROMPT = "def fib(n):\n    if n < 2:\n        return n\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--trees", type=int, default=3, help="random trees besides the chain and the star")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    loaded = load_model(args.model)
    model = loaded.model
    rng = random.Random(args.seed)
    vocab = model.config.vocab_size
    context = KVCache(model.config)
    prefill(model, context, loaded.tokenizer.encode(PROMPT, add_special_tokens=False))
    trees = {"chain": [i - 1 for i in range(12)], "star": [-1] * 8}
    for t in range(args.trees):
        n = args.nodes if t == 0 else rng.randrange(2, args.nodes + 1)
        trees[f"random{t} ({n} nodes)"] = [rng.randrange(-1, i) if i else -1 for i in range(n)]
    print(f"model={loaded.name} dtype={model.dtype} context={len(context)} tokens")
    worst = 0.0
    for name, parents in trees.items():
        ids = [rng.randrange(200, vocab) for _ in parents]
        got = tree_forward(model, context.fork(), ids, parents)  # [P, V]
        want = torch.stack(tree_rows_sequential(model, context, ids, parents))  # [P, V]
        diff = float((got - want).abs().max())
        worst = max(worst, diff)
        print(f"{name:24s} nodes={len(parents):3d} depth={max(depths(parents)) + 1:3d} max |diff| = {diff:.2e}")
    print(f"max |logit difference| over all trees: {worst:.2e} (tolerance in the tests: 1e-4)")


if __name__ == "__main__":
    main()
