"""The repository block: modes, layouts, the budget, and the prompt it goes into."""

from __future__ import annotations

import pytest

from codedec.context.crossfile import CrossFile, check_mode
from codedec.context.fim import build_prompt
from codedec.context.repository import ContextChunk
from tests.codedec.context.scripted_nll import copy_nll

CHUNKS = [ContextChunk(f"pkg/m{i}.py", "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(4)),
                       "import", f"f{i}") for i in range(5)]


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_comment_layout_as_repobench(tiny):
    cf = CrossFile(dict(tiny.preset, repo=None), tiny.tokenizer)
    ids = cf.render(CHUNKS[:2] + [ContextChunk("pkg/m1.py", "Z = 1\n", "recent")], "app/main.py", "demo")
    assert _decode(tiny.tokenizer, ids) == (
        f"# Repo Name: demo\n# Path: pkg/m0.py\n{CHUNKS[0].text}\n"
        f"# Path: pkg/m1.py\n{CHUNKS[1].text}Z = 1\n\n# Path: app/main.py\n")  # one header per run of a file


def test_repository_token_layout(tiny):
    preset = dict(tiny.preset, repo={"repo_name": "<fim_suffix>", "file_sep": "<fim_middle>"})
    ids = CrossFile(preset, tiny.tokenizer).render(CHUNKS[:1], "main.py", "demo")
    assert _decode(tiny.tokenizer, ids) == f"<fim_suffix>demo\n<fim_middle>pkg/m0.py\n{CHUNKS[0].text}<fim_middle>main.py\n"


@pytest.mark.parametrize("mode", ["truncate", "coarse", "longcodezip"])
def test_budget_is_never_exceeded(tiny, mode):
    cf = CrossFile(tiny.preset, tiny.tokenizer, copy_nll())
    for budget in (0, 5, 17, 40, 64, 101, 250, 5000):
        block = cf.build(CHUNKS, mode, budget, prefix="y = f3_2(1)\n", current_path="main.py")
        assert len(block.ids) <= budget
        assert block.ids == cf.render(block.chunks, "main.py")


def test_truncate_keeps_the_head_in_order_and_cuts_whole_lines(tiny):
    cf = CrossFile(tiny.preset, tiny.tokenizer)
    block = cf.build(CHUNKS, "truncate", 120, current_path="main.py")
    kept = block.chunks
    assert [c.path for c in kept] == [c.path for c in CHUNKS[: len(kept)]]
    assert all(c.text == o.text for c, o in zip(kept[:-1], CHUNKS, strict=False))
    assert CHUNKS[len(kept) - 1].text.startswith(kept[-1].text) and kept[-1].text.endswith("\n")


def test_none_and_nothing_give_no_block(tiny):
    cf = CrossFile(tiny.preset, tiny.tokenizer)
    assert cf.build(CHUNKS, "none", 500).ids == []
    assert cf.build([], "truncate", 500).ids == []
    with pytest.raises(ValueError, match="context must be one of"):
        check_mode("everything")


def test_longcodezip_without_a_model_falls_back_to_truncation(tiny):
    cf = CrossFile(tiny.preset, tiny.tokenizer, nll=None)
    assert cf.build(CHUNKS, "longcodezip", 120).chunks == cf.build(CHUNKS, "truncate", 120).chunks


def test_block_goes_first_and_is_paid_from_the_prompt_budget(tiny):
    cf = CrossFile(tiny.preset, tiny.tokenizer)
    block = cf.build(CHUNKS, "truncate", 100, current_path="main.py")
    prefix = "".join(f"v{i} = {i}\n" for i in range(300))
    plain = build_prompt(tiny.preset, tiny.tokenizer, prefix, "\n", max_tokens=400, heal=False)
    with_block = build_prompt(tiny.preset, tiny.tokenizer, prefix, "\n", max_tokens=400, heal=False,
                              context_ids=block.ids)
    assert len(with_block.ids) <= 400
    assert with_block.ids[: len(block.ids)] == block.ids
    assert with_block.dropped_prefix_lines > plain.dropped_prefix_lines
