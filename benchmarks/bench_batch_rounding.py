"""Batched vs one-at-a-time forwards per dtype: why bf16 speculation is not token-identical (E8).

SmolLM2, 200 cached tokens of ``codedec/engine.py``, then its next 8 tokens three ways: one
``decode_one`` per token (plain decoding), one ``tree_forward`` over them as a chain (speculative
verification) and one plain causal ``verify_forward``. Prints, per dtype, the largest logit
difference of each batched way against one-at-a-time decoding, the logits' spread, and how many
rows' argmax differ.

    .venv/bin/python benchmarks/bench_batch_rounding.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from codedec.cache import KVCache
from codedec.forward import prefill, tree_forward, tree_rows_sequential, verify_forward
from codedec.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.set_num_threads(2)
    for dtype in (torch.float32, torch.bfloat16):
        loaded = load_model("smollm2", dtype=dtype)
        model = loaded.model
        ids = loaded.tokenizer.encode((ROOT / "codedec" / "engine.py").read_text()[:3000])[:300]
        ctx = KVCache(model.config)
        prefill(model, ctx, ids[:200])
        draft, parents = ids[200:208], list(range(-1, 7))
        one_by_one = tree_rows_sequential(model, ctx, draft, parents)
        tree = tree_forward(model, ctx.fork(), draft, parents)
        causal = verify_forward(model, ctx.fork(), draft)
        d_tree = max(float((tree[i] - one_by_one[i]).abs().max()) for i in range(8))
        d_causal = max(float((causal[i] - one_by_one[i]).abs().max()) for i in range(8))
        flips = sum(int(tree[i].argmax() != one_by_one[i].argmax()) for i in range(8))
        spread = float(torch.stack(one_by_one).std())
        print(f"{str(dtype):15s} max |tree - one-at-a-time| {d_tree:.4f}   max |causal batch - one-at-a-time| "
              f"{d_causal:.4f}   logit std {spread:.2f}   argmax differs in {flips}/8 rows")


if __name__ == "__main__":
    main()
