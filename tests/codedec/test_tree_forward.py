"""``forward.tree_forward`` + ``KVCache.keep``: one forward over a draft tree equals a sequential
decode along every node's path, and keeping a path leaves the cache a sequential decode writes.

Trees: chains, stars and random trees up to 64 nodes, on tiny GQA and MHA models and (integration)
on the embedded model; fp32 tolerance.
"""

from __future__ import annotations

import random

import pytest
import torch

from codedec.cache import KVCache
from codedec.draft_tree import ancestors as tree_ancestors
from codedec.draft_tree import depths as tree_depths
from codedec.forward import decode_one, prefill, tree_forward, tree_rows_sequential

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = {"rtol": 1e-4, "atol": 1e-4}


def chain(n):
    return [i - 1 for i in range(n)]


def star(n):
    return [-1] * n


def random_tree(n, seed):
    rng = random.Random(seed)
    return [rng.randrange(-1, i) if i else -1 for i in range(n)]


def check_tree(loaded, context_ids, ids, parents) -> float:
    """Assert exactness; return the largest absolute difference."""
    model = loaded.model
    context = KVCache(model.config)
    prefill(model, context, context_ids)
    want = tree_rows_sequential(model, context, ids, parents)
    tree = context.fork()
    got = tree_forward(model, tree, ids, parents)  # [P, V]
    assert got.shape == (len(ids), want[0].shape[-1])
    assert len(tree) == len(context_ids) + len(ids) and tree.forwards == context.forwards + 1
    worst = 0.0
    for i, row in enumerate(want):
        torch.testing.assert_close(got[i], row, **TOL, msg=lambda m, i=i: f"node {i}: {m}")
        worst = max(worst, float((got[i] - row).abs().max()))
    return worst


@pytest.mark.parametrize("kv_heads", [2, 4])  # GQA and MHA
@pytest.mark.parametrize("shape", ["chain", "star", "random"])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_tree_rows_equal_sequential_decode_tiny(make_tiny, kv_heads, shape, n):
    loaded = make_tiny(seed=kv_heads, num_key_value_heads=kv_heads)
    rng = random.Random(n * 31 + kv_heads)
    vocab = loaded.model.config.vocab_size
    parents = {"chain": chain(n), "star": star(n), "random": random_tree(n, n + kv_heads)}[shape]
    ids = [rng.randrange(3, vocab) for _ in parents]
    context = [rng.randrange(3, vocab) for _ in range(13)]
    check_tree(loaded, context, ids, parents)


@pytest.mark.parametrize("seed", range(4))
def test_random_trees_tiny(make_tiny, seed):
    loaded = make_tiny(seed=seed, num_key_value_heads=2)
    rng = random.Random(seed)
    n = rng.randrange(2, 65)
    vocab = loaded.model.config.vocab_size
    check_tree(loaded, [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 40))],
               [rng.randrange(3, vocab) for _ in range(n)], random_tree(n, seed))


def test_a_plain_causal_mask_would_fail(make_tiny):
    """The check can fail: scoring a star with an ordinary causal forward (every node sees the
    earlier siblings) differs from the sequential rows."""
    from codedec.forward import verify_forward

    loaded = make_tiny(seed=0, num_key_value_heads=2)
    model = loaded.model
    context = KVCache(model.config)
    prefill(model, context, [5, 6, 7, 8])
    ids, parents = [10, 11, 12], star(3)
    want = tree_rows_sequential(model, context, ids, parents)
    causal = verify_forward(model, context.fork(), ids)
    assert not torch.allclose(causal[2], want[2], **TOL)


def test_keep_compacts_to_the_accepted_path(make_tiny):
    loaded = make_tiny(seed=1, num_key_value_heads=2)
    model = loaded.model
    context_ids = [4, 9, 16, 25, 36]
    ids = [50, 51, 52, 53, 54, 55, 56]
    parents = [-1, -1, 0, 1, 2, 4, 3]  # the path 0 -> 2 -> 4 -> 5 among side branches
    tree = KVCache(model.config)
    prefill(model, tree, context_ids)
    rows = tree_forward(model, tree, ids, parents)
    path = [0, 2, 4, 5]
    tree.keep(list(range(len(context_ids))) + [len(context_ids) + i for i in path])
    seq = KVCache(model.config)
    prefill(model, seq, context_ids + [ids[i] for i in path[:-1]])
    want = decode_one(model, seq, ids[path[-1]])
    torch.testing.assert_close(rows[path[-1]], want, **TOL)
    assert tree.tokens == seq.tokens
    for (k, v), (k0, v0) in zip(tree.layer_tensors(), seq.layer_tensors(), strict=True):
        torch.testing.assert_close(k, k0, **TOL)
        torch.testing.assert_close(v, v0, **TOL)
    # Decoding on from the compacted cache equals decoding on from the sequential one.
    torch.testing.assert_close(decode_one(model, tree, 77), decode_one(model, seq, 77), **TOL)


def test_keep_validates_and_crops():
    cache = KVCache()
    with pytest.raises(ValueError):
        cache.keep([0])
    with pytest.raises(ValueError, match="increasing"):
        KVCache().keep([1, 0])


def test_tree_helpers():
    assert tree_depths([-1, 0, 0, 1, -1]) == [0, 1, 1, 2, 0]
    anc = tree_ancestors([-1, 0, 0, 1])
    assert anc[3].tolist() == [True, True, False, True] and anc[2].tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="earlier node"):
        tree_depths([-1, 1])
    with pytest.raises(ValueError, match="parents"):
        tree_forward(None, KVCache(), [1, 2], [-1])


@pytest.mark.integration
def test_tree_rows_equal_sequential_decode_smollm2(smollm2, capsys):
    ids = smollm2.tokenizer.encode("def fib(n):\n    if n < 2:\n        return n\n", add_special_tokens=False)
    rng = random.Random(0)
    worst = 0.0
    for parents in (chain(12), star(8), random_tree(64, 1)):
        draft = [rng.randrange(200, 20000) for _ in parents]
        worst = max(worst, check_tree(smollm2, ids, draft, parents))
    with capsys.disabled():
        print(f"\ntree_forward vs sequential decode, SmolLM2 fp32: max |diff| = {worst:.2e}")


@pytest.mark.parametrize("seed", range(3))
def test_a_tree_grown_one_level_per_forward(make_tiny, seed):
    """``context=``: nodes already in the cache are earlier levels of the same tree (lookahead
    rollouts grow B branches a token at a time); each level's rows equal the sequential decode."""
    loaded = make_tiny(seed=seed, num_key_value_heads=2)
    model, rng = loaded.model, random.Random(seed)
    vocab = model.config.vocab_size
    context = KVCache(model.config)
    prefill(model, context, [rng.randrange(3, vocab) for _ in range(11)])
    tree, ids, parents = context.fork(), [], []
    tips = [-1, -1, -1]  # three branches from the root
    for _level in range(4):
        new = [rng.randrange(3, vocab) for _ in tips]
        new_parents = list(tips)
        got = tree_forward(model, tree, new, parents + new_parents, context=len(context))  # [B, V]
        ids, parents = ids + new, parents + new_parents
        want = tree_rows_sequential(model, context, ids, parents)[-len(new):]
        for row, ref in zip(got, want, strict=True):
            torch.testing.assert_close(row, ref, **TOL)
        tips = list(range(len(ids) - len(new), len(ids)))
    assert len(tree) == len(context) + len(ids) and tree.forwards == context.forwards + 4
    with pytest.raises(ValueError):
        tree_forward(model, tree, [5], [-1], context=len(context))  # the cached nodes need parents too
