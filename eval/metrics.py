"""Scores for completions: pass@k, exact match, edit similarity, latency percentiles.

Pure functions on plain values; nothing here runs code or knows about a model. The
definitions follow the papers whose numbers we compare with:

* ``pass_at_k`` — the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
  Models Trained on Code", Codex/HumanEval), in its numerically stable product form;
* ``exact_match`` / ``edit_similarity`` — RepoBench (Liu et al. 2023): whitespace-split
  token equality, and the Levenshtein-based ``fuzz.ratio`` on a 0–100 scale (rapidfuzz,
  the maintained equivalent of the fuzzywuzzy call RepoBench makes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from rapidfuzz import fuzz


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem with ``n`` samples of which ``c`` passed.

    pass@k = 1 - C(n-c, k) / C(n, k), computed as
    1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
    If fewer than ``k`` samples failed (``n - c < k``) every k-subset holds a pass: 1.0.
    Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k over problems: the mean of :func:`pass_at_k` over ``(n, c)`` pairs (nan if none)."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return float(np.mean(values)) if values else math.nan


def exact_match(pred: str, ref: str) -> bool:
    """RepoBench exact match: equal as lists of whitespace-separated tokens."""
    return pred.split() == ref.split()


def span_exact_match(pred: str, ref: str) -> bool:
    """Infilled-span exact match: equal line by line, ignoring trailing whitespace and newlines."""
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().split("\n")]

    return norm(pred) == norm(ref)


def edit_similarity(pred: str, ref: str) -> float:
    """RepoBench edit similarity: ``fuzz.ratio`` (normalized Indel similarity), 0–100."""
    return float(fuzz.ratio(pred, ref))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100, linear interpolation) of ``values``; nan when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "mean": ...}`` of latencies in ms (nan when empty)."""
    mean = float(np.mean(values_ms)) if len(values_ms) else math.nan
    return {"p50": percentile(values_ms, 50), "p95": percentile(values_ms, 95), "mean": mean}
