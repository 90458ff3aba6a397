"""LongCodeZip on a scripted copy-model (it predicts tokens it has already seen in the row), and
``forward.token_nll`` on a real tiny model."""

from __future__ import annotations

import torch

from codedec.context.longcodezip import LongCodeZip, ZipConfig, _knapsack, query_text
from codedec.context.outline import outline
from codedec.context.repository import ContextChunk
from codedec.forward import token_nll
from tests.codedec.context.scripted_nll import copy_nll


def encode_words(lines):
    """One token per whitespace-separated word (and one for the newline): easy to count."""
    return [[hash(w) % 10_000 for w in line.split()] + [1] for line in lines]


def _fn(name: str, body_words: str, lines: int = 6) -> str:
    body = "".join(f"    {body_words} step{i}\n" for i in range(lines))
    return f"def {name}():\n{body}\n"


FILLER = [ContextChunk(f"pkg/f{i}.py", _fn(f"filler{i}", f"alpha{i} beta{i}"), "import") for i in range(6)]
NEEDED = ContextChunk("pkg/needed.py", _fn("compute_total", "invoice_total tax_rate"), "import")
QUERY_PREFIX = "x = 1\ny = invoice_total * tax_rate\nz = compute_total()\nw = "


def test_relevant_function_wins_although_it_comes_last():
    zipper = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=False, candidates=100))
    chunks = [*FILLER, NEEDED]
    budget = 2 * zipper.count(NEEDED.text)
    z = zipper.compress(chunks, query_text(QUERY_PREFIX, 8), budget)
    assert any("compute_total" in c.text for c in z.chunks)
    assert z.tokens_out <= budget < z.tokens_in
    # order kept: the kept chunks are in input order
    kept = [c.path for c in z.chunks]
    assert kept == [c.path for c in chunks if c.path in kept]


def test_coarse_keeps_whole_units_and_fine_keeps_signatures():
    chunks = [*FILLER, NEEDED]
    coarse = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=False, candidates=100))
    z = coarse.compress(chunks, query_text(QUERY_PREFIX, 8), 60)
    originals = {u.text for c in chunks for u in outline(c.text).units}
    for c in z.chunks:
        assert all(u.text in originals for u in outline(c.text).units)
    fine = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=True, candidates=100))
    z = fine.compress(chunks, query_text(QUERY_PREFIX, 8), 30)
    assert z.tokens_out <= 30
    for c in z.chunks:
        lines = c.text.splitlines()
        assert lines[0].startswith("def ")  # the signature block is always kept
        source = next(x for x in chunks if x.path == c.path).text.splitlines()
        assert all(line in source or line.strip() == "..." for line in lines)


def test_budget_never_exceeded_and_deterministic():
    chunks = [*FILLER, NEEDED]
    for fine in (False, True):
        for budget in (0, 1, 7, 13, 40, 77, 150, 1000):
            a = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=fine)).compress(chunks, "y = tax_rate\n", budget)
            b = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=fine)).compress(chunks, "y = tax_rate\n", budget)
            assert a.tokens_out <= max(budget, 0) or a.tokens_out == a.tokens_in <= budget
            assert [c.text for c in a.chunks] == [c.text for c in b.chunks]


def test_scores_are_cached_by_unit_and_query():
    calls: list = []
    zipper = LongCodeZip(copy_nll(calls), encode_words, ZipConfig(candidates=100))
    chunks = [*FILLER, NEEDED]
    first = zipper.compress(chunks, "y = tax_rate\n", 40)
    assert calls and first.scored == len(chunks) and first.cached == 0
    calls.clear()
    again = zipper.compress(chunks, "y = tax_rate\n", 40)
    assert calls == [] and again.cached == len(chunks)
    assert [c.text for c in again.chunks] == [c.text for c in first.chunks]
    zipper.compress(chunks, "y = invoice_total\n", 40)  # another query: scored again
    assert calls


def test_context_that_fits_is_returned_untouched_without_scoring():
    calls: list = []
    zipper = LongCodeZip(copy_nll(calls), encode_words)
    z = zipper.compress([NEEDED], "y\n", 10_000)
    assert z.chunks == [NEEDED] and calls == []


def test_query_leaves_out_the_line_being_typed():
    assert query_text("a\nb\nc = fo", 2) == "a\nb\n"
    assert query_text("a\nb\nc = fo", 1) == "b\n"


def test_knapsack_is_optimal_on_a_small_case():
    items = [(10.0, 5), (40.0, 4), (30.0, 6), (50.0, 3)]
    assert _knapsack(items, 10, quantum=1) == [1, 3]


def test_token_nll_matches_one_unpadded_forward_per_row(tiny, one_thread):
    rows = [[5, 9, 12, 40, 41, 7], [3, 4], [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]]
    got = token_nll(tiny.model, rows, batch_tokens=24)  # batches of two rows: the short ones padded
    for row, nll in zip(rows, got, strict=True):
        with torch.inference_mode():
            logits = tiny.model(input_ids=torch.tensor([row])).logits[0, :-1].float()
        want = torch.nn.functional.cross_entropy(logits, torch.tensor(row[1:]), reduction="none")
        assert nll.shape == (len(row) - 1,)
        torch.testing.assert_close(nll, want, rtol=1e-4, atol=1e-4)


def test_a_deadline_bounds_scoring_and_later_calls_finish_it():
    import time

    calls: list = []
    chunks = [*FILLER, NEEDED]
    zipper = LongCodeZip(copy_nll(calls), encode_words, ZipConfig(fine=False, candidates=100, batch_tokens=16))
    budget = 2 * zipper.count(NEEDED.text)
    late = zipper.compress(chunks, query_text(QUERY_PREFIX, 8), budget, deadline=time.perf_counter() - 1)
    assert calls == [] and late.scored == 0 and late.unscored == len(chunks)
    assert [c.path for c in late.chunks] == [c.path for c in chunks[: len(late.chunks)]]  # the input's order
    assert late.tokens_out <= budget
    done = zipper.compress(chunks, query_text(QUERY_PREFIX, 8), budget, deadline=time.perf_counter() + 60)
    assert len(calls) > 1 and done.scored == len(chunks) and done.unscored == 0  # in groups, all in time
    fresh = LongCodeZip(copy_nll(), encode_words, ZipConfig(fine=False, candidates=100))
    assert [c.text for c in done.chunks] == [c.text for c in fresh.compress(chunks, query_text(QUERY_PREFIX, 8),
                                                                            budget).chunks]
    assert any("compute_total" in c.text for c in done.chunks)
