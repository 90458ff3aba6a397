"""Typed-ahead reuse: typing the start of a shown suggestion serves the rest without a model call."""

from __future__ import annotations

import pytest

from lsp_server.result_cache import ResultCache

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize(
    "typed, suffix, want",
    [
        ("", SUFFIX, "return a + b"),  # the same cursor: exact hit
        ("r", SUFFIX, "eturn a + b"),
        ("return a", SUFFIX, " + b"),
        ("return a + ", SUFFIX, "b"),
        ("return a + b", SUFFIX, None),  # typed to the end: nothing left to show
        ("ret", "\nchanged()\n", None),  # the text after the cursor changed
        ("rex", SUFFIX, None),  # typed something else
    ],
)
def test_typed_ahead(typed, suffix, want):
    cache = ResultCache()
    cache.put(PREFIX, SUFFIX, "return a + b")
    assert cache.get(PREFIX + typed, suffix) == want


def test_lookback_limit_lru_and_hit_rate():
    cache = ResultCache(max_entries=2, lookback=3)
    cache.put("a", "", "bcdefg")
    assert cache.get("abcd", "") == "efg"
    assert cache.get("abcde", "") is None  # 4 back: beyond the look-back
    cache.put("x", "", "1")
    cache.put("y", "", "2")  # evicts "a"
    assert cache.get("a", "") is None and len(cache) == 2
    assert cache.hits == 1 and cache.misses == 2 and cache.hit_rate == pytest.approx(1 / 3)
    cache.put("z", "", "")  # empty completions are not stored
    assert len(cache) == 2
    with pytest.raises(ValueError):
        ResultCache(max_entries=0)


def test_far_away_edits_do_not_invalidate():
    cache = ResultCache(context=5)
    head = "# a long header that changes\n" * 3
    cache.put(head + "x = ", "", "1")
    assert cache.get("# edited header\n" + "x = ", "") == "1"
