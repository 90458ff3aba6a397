"""Prompt assembly costs O(window), not O(file), and a very long line keeps a stable window.

The work is measured as characters handed to the tokenizer (deterministic), not as time.
"""

from __future__ import annotations

import random

import pytest

from codedec.context import fim
from codedec.context.fim import build_prompt
from codedec.engine import Engine
from codedec.service import CompletionRequest, CompletionService

BUDGET = 1024


def _file(n_lines: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    return "".join(f"value_{i}_{rnd.randrange(10**9)} = compute({i}, 'k{rnd.randrange(10**6)}')\n"
                   for i in range(n_lines))  # every line distinct, as in a generated data file


@pytest.fixture()
def tokenized_chars(tiny, monkeypatch):
    """Counts the characters the tiny tokenizer is asked to tokenize."""
    tok = tiny.tokenizer
    count = [0]
    real_call, real_encode = type(tok).__call__, type(tok).encode

    def call(self, text, *args, **kwargs):
        count[0] += sum(map(len, text)) if isinstance(text, list) else len(text)
        return real_call(self, text, *args, **kwargs)

    def encode(self, text, *args, **kwargs):
        count[0] += len(text)
        return real_encode(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", call)
    monkeypatch.setattr(type(tok), "encode", encode)
    fim._LINE_COSTS.pop(tok, None)
    return count


def test_prompt_work_does_not_grow_with_the_file(tiny, tokenized_chars):
    work = {}
    for n_lines in (5_000, 40_000):  # ~0.3 MB and ~2.4 MB, all lines distinct
        text = _file(n_lines)
        cut = text.index("\n", len(text) // 2) + 1
        tokenized_chars[0] = 0
        p = build_prompt(tiny.preset, tiny.tokenizer, text[:cut], text[cut:], max_tokens=BUDGET)
        assert len(p.ids) <= BUDGET and p.dropped_prefix_lines > 0 and p.dropped_suffix_lines > 0
        work[n_lines] = tokenized_chars[0]
    assert work[40_000] < 1.5 * work[5_000], work
    assert work[40_000] < 40 * BUDGET, work  # a few windows' worth, not 2.4 MB


def test_a_window_from_the_walk_equals_the_whole_file_count(tiny):
    """The lazy walk keeps exactly the lines counting all of them would keep."""
    text = _file(3_000, seed=1)
    cut = text.index("\n", len(text) // 3) + 1
    prefix, suffix = text[:cut], text[cut:]
    kept, ids, dropped = fim.fit_prefix(tiny.tokenizer, prefix, 700)
    lines = prefix.splitlines(keepends=True)
    costs = [len(tiny.tokenizer.encode(x, add_special_tokens=False)) for x in lines]
    total, keep = 0, 0
    for c in reversed(costs):
        if total + c > 700:
            break
        total, keep = total + c, keep + 1
    assert kept == "".join(lines[len(lines) - keep:]) and dropped == len(lines) - keep
    s_kept, s_ids, s_dropped = fim.fit_suffix(tiny.tokenizer, suffix, 300)
    assert len(s_ids) <= 300 and suffix.startswith(s_kept) and s_kept.endswith("\n")
    assert s_dropped == suffix.count("\n") - s_kept.count("\n")


def test_a_megabyte_line_keeps_a_stable_window_while_typing(tiny, tokenized_chars):
    line = "data = [" + ", ".join(str(i % 997) for i in range(200_000))  # ~1 MB, one line
    starts, work = [], []
    for k in range(40):
        prefix = "import os\n" + line + ", " + "7" * k  # the user types at the end of the line
        tokenized_chars[0] = 0
        kept, ids, _ = fim.fit_prefix(tiny.tokenizer, prefix, BUDGET, align=32)
        assert len(ids) <= BUDGET and prefix.endswith(kept)
        starts.append(len(prefix) - len(kept))
        work.append(tokenized_chars[0])
    moves = sum(a != b for a, b in zip(starts, starts[1:], strict=False))
    assert moves <= 2, starts  # the start moves in steps, not with every character
    assert max(work) < 40 * BUDGET  # the line is never tokenized whole


def test_typing_on_a_megabyte_line_reuses_the_kv_cache(tiny):
    line = "data = [" + ", ".join(str(i % 997) for i in range(200_000))
    service = CompletionService(Engine(tiny))
    try:
        stats = []
        for k in range(3):
            req = CompletionRequest(id=k, doc="big", prefix=line + ", 1" + "2" * k, max_tokens=2,
                                    max_prompt_tokens=BUDGET, heal=False)
            result = service.complete(req, timeout=60)
            assert result.error is None, result.error
            stats.append(result.stats)
        for s in stats[1:]:
            assert s["reused_tokens"] >= 0.8 * s["prompt_tokens"], stats
    finally:
        service.close()
