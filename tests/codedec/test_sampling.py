"""Sampling: greedy ties, top-k / top-p filtering, seeded reproducibility, the distribution."""

from __future__ import annotations

import pytest
import torch

from codedec.sampling import SamplingParams, filter_logits, make_generator, sample


def test_greedy_takes_argmax_lowest_id_on_ties():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample(logits, SamplingParams(), None).tolist() == [1, 0]


def test_top_k_keeps_k():
    x = filter_logits(torch.tensor([[1.0, 4.0, 3.0, 2.0]]), SamplingParams(temperature=1.0, top_k=2))
    assert torch.isfinite(x).tolist() == [[False, True, True, False]]


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    x = filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.8))
    assert torch.isfinite(x).tolist() == [[True, True, False, False]]
    x = filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.81))
    assert torch.isfinite(x).tolist() == [[True, True, True, False]]


def test_seeded_generator_reproducible():
    logits = torch.randn(1, 50)
    p = SamplingParams(temperature=1.0, seed=3)
    a = [int(sample(logits, p, g)) for g in [make_generator(p)] for _ in range(20)]
    b = [int(sample(logits, p, g)) for g in [make_generator(p)] for _ in range(20)]
    assert a == b


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    p = SamplingParams(temperature=1.0, seed=0)
    g = make_generator(p)
    logits = torch.log(probs).expand(4000, 3)
    counts = torch.bincount(sample(logits, p, g), minlength=3).float() / 4000
    assert torch.allclose(counts, probs, atol=0.03)


def test_all_masked_row_raises():
    with pytest.raises(ValueError, match="masked"):
        sample(torch.full((1, 4), float("-inf")), SamplingParams(), None)


@pytest.mark.parametrize(
    "kw",
    [dict(max_new_tokens=-1), dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2), dict(max_time_ms=0), dict(stop_strings=("",))],
)
def test_bad_params(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)
