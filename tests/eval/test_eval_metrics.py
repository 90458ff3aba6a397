"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
from codedec_eval.metrics import (
    edit_similarity,
    exact_match,
    latency_summary,
    mean_pass_at_k,
    pass_at_k,
    percentile,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (10, 0, 10, 0.0),  # c = 0
        (10, 10, 10, 1.0),  # c = n = k
        (10, 3, 1, 0.3),  # pass@1 is the pass rate
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 4, 2, 1.0),  # n - c < k: every pair holds a pass
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
    ],
)
def test_pass_at_k_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_the_binomial_definition(args):
    n, c, k = args
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    assert mean_pass_at_k([(1, 1), (1, 0), (1, 0), (1, 1)], k=1) == 0.5
    assert mean_pass_at_k([(10, 3), (10, 10)], k=1) == pytest.approx(0.65)
    assert math.isnan(mean_pass_at_k([], k=1))


@pytest.mark.parametrize(
    ("pred", "ref", "em"),
    [
        ("x = foo(a, b)", "x = foo(a, b)", True),
        ("  x  =   foo(a, b)\n", "x = foo(a, b)", True),  # whitespace runs do not matter
        ("x = foo(a,b)", "x = foo(a, b)", False),  # but token boundaries do
        ("", "", True),
        ("return x", "return y", False),
    ],
)
def test_exact_match(pred, ref, em):
    assert exact_match(pred, ref) is em


def test_edit_similarity_known_values():
    assert edit_similarity("self.x = 1", "self.x = 1") == 100.0
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("abc", "abd") == pytest.approx(200 * 2 / 6)  # 2 matches of 6 chars
    assert edit_similarity("abcd", "ab") == pytest.approx(200 * 2 / 6)
    assert edit_similarity("", "") == 100.0


def test_percentiles():
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)
    summary = latency_summary([10.0, 20.0, 30.0, 40.0])
    assert summary == {"p50": 25.0, "p95": pytest.approx(38.5), "mean": 25.0}
    assert math.isnan(latency_summary([])["p50"])
