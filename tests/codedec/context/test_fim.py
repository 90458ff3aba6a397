"""FIM prompt assembly: layouts per preset, budgets that keep the lines nearest the cursor."""

from __future__ import annotations

import pytest

from codedec.context.fim import build_prompt

PREFIX = "".join(f"line_{i} = {i}\n" for i in range(200)) + "def f():\n    ret"
SUFFIX = "\n" + "".join(f"after_{i} = {i}\n" for i in range(200))


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_psm_layout(tiny):
    p = build_prompt(tiny.preset, tiny.tokenizer, "a = 1\nb = ", "\nc = 3\n", heal=False)
    assert p.mode == "psm"
    assert decode(tiny.tokenizer, p.ids) == "<fim_prefix>a = 1\nb = <fim_suffix>\nc = 3\n<fim_middle>"


def test_spm_layout(tiny):
    preset = dict(tiny.preset, fim=dict(tiny.preset["fim"], modes=("psm", "spm")))
    p = build_prompt(preset, tiny.tokenizer, "a = ", "\nb\n", heal=False, mode="spm")
    assert decode(tiny.tokenizer, p.ids) == "<fim_suffix>\nb\n<fim_prefix>a = <fim_middle>"


def test_prefix_only_for_models_without_fim(tiny):
    preset = dict(tiny.preset, fim=None)
    p = build_prompt(preset, tiny.tokenizer, "a = 1\nb = ", "\nc = 3\n", heal=False)
    assert p.mode == "prefix" and decode(tiny.tokenizer, p.ids) == "a = 1\nb = "
    assert p.suffix == "\nc = 3\n"  # still available to decoding components
    with pytest.raises(ValueError, match="no FIM tokens"):
        build_prompt(preset, tiny.tokenizer, "a", mode="psm")


def test_budget_keeps_lines_nearest_the_cursor(tiny):
    p = build_prompt(tiny.preset, tiny.tokenizer, PREFIX, SUFFIX, max_tokens=300, heal=False)
    assert len(p.ids) <= 300
    assert p.prefix.endswith("line_199 = 199\ndef f():\n    ret") and not p.prefix.startswith("line_0 ")
    assert p.suffix.startswith("\nafter_0 = 0\n") and "after_199" not in p.suffix
    assert p.dropped_prefix_lines > 0 and p.dropped_suffix_lines > 0
    assert PREFIX.endswith(p.prefix) and SUFFIX.startswith(p.suffix)


def test_healing_moves_the_tail_into_heal_text(tiny):
    p = build_prompt(tiny.preset, tiny.tokenizer, "def f():\n    ret", "", heal=True)
    assert p.heal_text and "ret".startswith(p.heal_text.strip()) or p.heal_text.endswith("ret")
    assert decode(tiny.tokenizer, p.ids).endswith("<fim_suffix><fim_middle>")
    assert not decode(tiny.tokenizer, p.ids).split("<fim_suffix>")[0].endswith("ret")


def test_empty_prefix_without_fim_starts_a_document(tiny):
    p = build_prompt(dict(tiny.preset, fim=None), tiny.tokenizer, "", "x = 1\n")
    assert p.ids == [tiny.tokenizer.eos_token_id]


def test_tiny_budget_is_an_error(tiny):
    with pytest.raises(ValueError, match="no room"):
        build_prompt(tiny.preset, tiny.tokenizer, "a", "b", max_tokens=4)


def test_marker_text_in_the_file_stays_text(tiny):
    p = build_prompt(tiny.preset, tiny.tokenizer, "s = '<fim_middle>'\n", "", heal=False)
    fim_ids = set(tiny.tokenizer.convert_tokens_to_ids(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]))
    assert sum(i in fim_ids for i in p.ids) == 3  # only the layout's own markers


def test_prefix_window_start_is_stable_while_typing(tiny):
    """Growing the file at the cursor must not slide the window start line by line."""
    from codedec.context.fim import fit_prefix

    starts = set()
    text = "".join(f"line_{i} = {i}\n" for i in range(400))
    for i in range(12):
        text += f"    value_{i} = compute({i})\n"
        kept, ids, dropped = fit_prefix(tiny.tokenizer, text, 1500, align=32)
        assert ids == tiny.tokenizer.encode(kept, add_special_tokens=False) and len(ids) <= 1500
        assert dropped % 32 == 0
        starts.add(dropped)
    assert len(starts) <= 2  # 12 new lines move the start at most once


def test_line_costs_are_memoized_and_exact(tiny, monkeypatch):
    """Per-line token counts come from a memo; only lines not seen before are tokenized, and the
    counts equal a fresh tokenization's."""
    from codedec.context import fim

    tok = tiny.tokenizer
    lines = [f"value_{i} = compute({i}, 'x' * {i})\n" for i in range(50)]
    fim._LINE_COSTS.pop(tok, None)
    expected = [len(tok.encode(line, add_special_tokens=False)) for line in lines]
    assert fim._line_costs(tok, lines) == expected
    seen: list[list[str]] = []
    real_call = type(tok).__call__

    def spy(self, text, *args, **kwargs):
        seen.append(list(text))
        return real_call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    edited = [*lines[:10], "inserted = 1\n", *lines[10:]]
    assert fim._line_costs(tok, edited) == [*expected[:10], len(tok.encode("inserted = 1\n")), *expected[10:]]
    assert seen == [["inserted = 1\n"]]
    assert fim._line_costs(tok, lines) == expected and len(seen) == 1  # nothing new: no tokenizer call


def test_line_cost_memo_evicts_the_least_recently_used(tiny, monkeypatch):
    from codedec.context import fim

    tok = tiny.tokenizer
    monkeypatch.setattr(fim, "LINE_COST_MEMO", 3)
    fim._LINE_COSTS.pop(tok, None)
    first, second = ["a = 1\n", "b = 2\n"], ["a = 1\n", "c = 3\n", "d = 4\n"]
    fim._line_costs(tok, first)
    assert fim._line_costs(tok, second) == [len(tok.encode(x, add_special_tokens=False)) for x in second]
    assert set(fim._LINE_COSTS[tok]) == set(second)  # b was used least recently
