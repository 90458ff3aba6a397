"""Tree-verify kernels: Triton == torch twin == a brute-force walk, over random trees and odd sizes.

On CPU the Triton side runs under the interpreter (fp32); with a CUDA device the compiled kernels
run (and bf16 gathers are compared too).
"""

from __future__ import annotations

import random

import pytest
import torch
from codedec.kernels.tree_verify import accept, gather_positions


def random_trie(n: int, rng: random.Random, vocab: int = 6) -> tuple[list[int], list[int]]:
    """Parents and tokens of a random n-node tree whose siblings carry distinct tokens (a small
    vocabulary, so greedy targets often match)."""
    parents, tokens, used = [], [], set()
    for i in range(n):
        p = rng.randrange(-1, i) if i else -1
        t = rng.randrange(vocab)
        while (p, t) in used:
            t = rng.randrange(vocab + 64)
        used.add((p, t))
        parents.append(p)
        tokens.append(t)
    return parents, tokens


def walk_greedy(parents, tokens, target) -> list[int]:
    """The reference: from the root, step to the child whose token is the target at the current
    row, while there is one."""
    path, cur = [], -1
    while True:
        kids = [i for i, p in enumerate(parents) if p == cur and tokens[i] == target[cur + 1]]
        if not kids:
            return path
        cur = kids[0]
        path.append(cur)


def batch(n_trees: int, n: int, seed: int, device: str):
    rng = random.Random(seed)
    trees = [random_trie(n, rng) for _ in range(n_trees)]
    parents = torch.tensor([t[0] for t in trees], dtype=torch.int64, device=device).reshape(n_trees, n)
    tokens = torch.tensor([t[1] for t in trees], dtype=torch.int64, device=device).reshape(n_trees, n)
    return parents, tokens


@pytest.mark.parametrize("n", [1, 2, 7, 31, 64, 100])
@pytest.mark.parametrize("n_trees", [1, 3])
def test_greedy_acceptance_triton_twin_and_reference_agree(triton_interpret, n, n_trees):
    dev = triton_interpret
    parents, tokens = batch(n_trees, n, seed=n * 7 + n_trees, device=dev)
    gen = torch.Generator().manual_seed(n)
    for trial in range(4):
        # targets drawn from the draft's own tokens most of the time, so long paths get accepted
        target = torch.randint(0, 6, (n_trees, n + 1), generator=gen).to(dev)
        if trial % 2:
            target[:, 1:] = tokens
            target[:, 0] = tokens[:, 0]
        twin = accept(parents, tokens, target=target, backend="torch")
        kern = accept(parents, tokens, target=target, backend="triton")
        for a, b in zip(twin, kern, strict=True):
            assert torch.equal(a.cpu(), b.cpu())
        for b in range(n_trees):
            want = walk_greedy(parents[b].tolist(), tokens[b].tolist(), target[b].tolist())
            got = twin.path[b, : int(twin.length[b])].tolist()
            assert got == want
            assert int(twin.last[b]) == (want[-1] if want else -1)
            assert twin.path[b, len(want):].eq(-1).all()


@pytest.mark.parametrize("n", [1, 5, 33, 64])
def test_sampled_acceptance_triton_matches_twin(triton_interpret, n):
    dev = triton_interpret
    parents, tokens = batch(3, n, seed=n, device=dev)
    gen = torch.Generator().manual_seed(n + 1)
    for _ in range(6):
        p_node = (torch.rand(3, n, generator=gen) * 0.6).to(dev)
        u = torch.rand(3, n, generator=gen).to(dev)
        twin = accept(parents, tokens, p_node=p_node, u=u, backend="torch")
        kern = accept(parents, tokens, p_node=p_node, u=u, backend="triton")
        for a, b in zip(twin, kern, strict=True):
            assert torch.equal(a.cpu(), b.cpu())


def test_sampled_rule_uses_the_residual_of_rejected_siblings():
    # root children 0 (p .5) and 1 (p .3): u0 = .6 rejects child 0; child 1 is accepted when
    # u1 * (1 - .5) < .3, i.e. u1 < .6 — not when u1 < .3 only.
    parents = torch.tensor([[-1, -1]])
    tokens = torch.tensor([[4, 7]])
    p_node = torch.tensor([[0.5, 0.3]])
    acc = accept(parents, tokens, p_node=p_node, u=torch.tensor([[0.6, 0.5]]), backend="torch")
    assert acc.path[0].tolist() == [1, -1] and int(acc.last[0]) == 1
    acc = accept(parents, tokens, p_node=p_node, u=torch.tensor([[0.6, 0.7]]), backend="torch")
    assert int(acc.length[0]) == 0 and int(acc.last[0]) == -1


@pytest.mark.parametrize("shape", [(1, 3, 37, 64), (2, 5, 19, 80), (1, 1, 7, 3)])
def test_gather_triton_matches_twin_on_strided_views(triton_interpret, shape):
    dev = triton_interpret
    B, H, T, D = shape
    buf = torch.randn(B, T + 5, H, D, device=dev)
    layer = buf.transpose(1, 2)[:, :, 2 : 2 + T]  # [B, H, T, D], not contiguous
    assert not layer.is_contiguous() or H == 1
    index = torch.tensor(sorted(random.Random(T).sample(range(T), min(T, 6))), device=dev)
    want = gather_positions(layer, index, backend="torch")
    got = gather_positions(layer, index, backend="triton")
    assert got.shape == (B, H, len(index), D)
    assert torch.equal(got, want)
    assert torch.equal(want, layer[:, :, index.cpu().tolist()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 kernels need a CUDA device (the interpreter mishandles bf16)")
def test_gather_bf16_on_gpu():
    layer = torch.randn(1, 4, 50, 64, device="cuda", dtype=torch.bfloat16)
    index = torch.tensor([3, 9, 10, 49], device="cuda")
    assert torch.equal(gather_positions(layer, index, backend="triton"), gather_positions(layer, index, backend="torch"))


def test_bad_arguments_are_refused():
    parents, tokens = torch.tensor([[-1, 0]]), torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="either target"):
        accept(parents, tokens)
    with pytest.raises(ValueError, match="N \\+ 1"):
        accept(parents, tokens, target=torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="backend"):
        accept(parents, tokens, target=torch.tensor([[1, 2, 3]]), backend="cuda")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        accept(parents, tokens, target=torch.tensor([[1, 2, 3]]), backend="triton")


def test_speculation_through_the_triton_kernels_is_plain_greedy(triton_interpret, tiny):
    """The suffix strategy with ``backend="triton"`` (acceptance and KV gather by the kernels)
    writes what plain greedy writes, and accepts drafts on the way."""
    if triton_interpret != "cpu":
        pytest.skip("the tiny model runs on CPU here")
    from codedec.cache import KVCache
    from codedec.engine import Engine
    from codedec.sampling import SamplingParams
    from codedec.speculate.verify import SpecConfig, SuffixStrategy
    from codedec.strategy import PlainStrategy

    engine = Engine(tiny)
    prompt = [(37 * i) % 400 + 5 for i in range(24)]

    def gen(strategy):
        steps = engine.generate(prompt, SamplingParams(max_new_tokens=30), (), strategy,
                                cache=KVCache(tiny.model.config))
        return [t for s in steps for t in s.token_ids]

    want = gen(PlainStrategy())
    assert len(want) == 30
    spec = SuffixStrategy(SpecConfig(adaptive=False, backend="triton"), references=[want[:12] + [7] + want[13:]])
    assert gen(spec) == want
    assert spec.stats["accepted"] >= 10, (len(want), spec.stats)
