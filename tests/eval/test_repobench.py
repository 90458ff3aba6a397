"""RepoBench records, prompt construction with a token budget, first-line extraction, scores."""

from __future__ import annotations

import json

import pytest
from codedec_eval.datafiles import DataError
from codedec_eval.repobench import (
    RepoBenchRecord,
    Snippet,
    build_prompt,
    first_code_line,
    load_repobench,
    record_from_dict,
    record_to_dict,
    score_lines,
)


def _row(**override):
    row = {
        "repo_name": "acme/tool", "file_path": "tool/run.py",
        "context": [{"path": "tool/models.py", "snippet": "class User:\n    name: str", "identifier": "User"},
                    {"path": "tool/util.py", "snippet": "def helper(x):\n    return x"}],
        "import_statement": "from tool.models import User\nfrom tool.util import helper",
        "cropped_code": "def main():\n    u = User()",
        "next_line": "    helper(u)", "level": "2k", "gold_snippet_index": 1,
        "created_at": "2023-12-01",
    }
    row.update(override)
    return row


def test_record_roundtrip_keeps_extra_fields():
    rec = record_from_dict(_row())
    assert rec.context[1] == Snippet("tool/util.py", "def helper(x):\n    return x")
    assert rec.gold_snippet_index == 1 and rec.extra == {"created_at": "2023-12-01"}
    again = record_from_dict(record_to_dict(rec))
    assert again == rec


def test_load_jsonl_and_errors_name_the_line(tmp_path):
    good = tmp_path / "rb.jsonl"
    good.write_text("\n".join(json.dumps(_row(level=lvl)) for lvl in ("2k", "4k")) + "\n")
    assert [r.level for r in load_repobench(good)] == ["2k", "4k"]

    cases = [
        (_row(context=[{"path": "a.py"}]), "context\\[0\\] must be an object"),
        ({k: v for k, v in _row().items() if k != "next_line"}, "missing field\\(s\\) next_line"),
        (_row(gold_snippet_index=5), "gold_snippet_index 5"),
        (_row(context="x"), "field 'context' should be list"),
        (_row(edit={"before_code": "x"}), "edit must be an object"),
    ]
    for bad, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(_row()) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=f"bad.jsonl:2: {message}"):
            load_repobench(path)
    path = tmp_path / "trunc.jsonl"
    path.write_text(json.dumps(_row()) + "\n" + json.dumps(_row())[:-5] + "\n")
    with pytest.raises(DataError, match="trunc.jsonl:2: invalid JSON"):
        load_repobench(path)


def test_unknown_extension_is_misuse(tmp_path):
    with pytest.raises(ValueError, match="unknown data file type"):
        load_repobench(tmp_path / "data.csv")


def test_parquet_roundtrip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([_row(), _row(level="8k")]), path)
    assert [r.level for r in load_repobench(path)] == ["2k", "8k"]


def test_prompt_matches_the_official_layout():
    prompt = build_prompt(record_from_dict(_row()))
    assert prompt == (
        "# Repo Name: acme/tool\n"
        "# Path: tool/models.py\nclass User:\n    name: str\n\n"
        "# Path: tool/util.py\ndef helper(x):\n    return x\n\n"
        "# Path: tool/run.py\nfrom tool.models import User\nfrom tool.util import helper\n"
        "def main():\n    u = User()\n"
    )


def test_prompt_collapses_long_newline_runs():
    prompt = build_prompt(record_from_dict(_row(cropped_code="x = 1\n\n\n\n\ny = 2")))
    assert "\n\n\n" not in prompt and "x = 1\n\ny = 2\n" in prompt


def test_budget_trims_cross_file_lines_from_the_end():
    rec = record_from_dict(_row())
    full = build_prompt(rec)
    budget = len(full) - 20  # count_tokens = characters
    prompt = build_prompt(rec, count_tokens=len, max_tokens=budget)
    assert len(prompt) <= budget
    assert prompt.startswith("# Repo Name: acme/tool\n# Path: tool/models.py\n")
    assert prompt.endswith("# Path: tool/run.py\nfrom tool.models import User\nfrom tool.util import helper\n"
                           "def main():\n    u = User()\n")
    assert "return x" not in prompt


def test_budget_below_the_in_file_part_keeps_the_code_nearest_the_cursor():
    code = "\n".join(f"line_{i} = {i}" for i in range(50))
    rec = record_from_dict(_row(cropped_code=code))
    prompt = build_prompt(rec, count_tokens=len, max_tokens=120)
    assert len(prompt) <= 120
    assert prompt.startswith("# Path: tool/run.py\n") and "Repo Name" not in prompt
    assert prompt.endswith("line_49 = 49\n")
    with pytest.raises(ValueError):
        build_prompt(rec, count_tokens=len, max_tokens=0)


@pytest.mark.parametrize(
    ("generated", "line"),
    [
        ("    x = foo(1)\n    y = 2\n", "    x = foo(1)"),
        ("\n\n    # explain\n    x = 1\n", "    x = 1"),
        ('    """\n    docs\n    """\n    return 3\n', "    return 3"),
        ('    """One line."""\n    return 4\n', "    return 4"),
        ("    '''a\n    b'''\n    z()\n", "    z()"),
        ("# only\n# comments\n", "# only"),
        ("", ""),
    ],
)
def test_first_code_line(generated, line):
    assert first_code_line(generated) == line


def test_score_lines_per_level_and_overall():
    rows = [
        ("2k", "x = foo(a, b)", "x = foo(a, b)"),  # EM, ES 100
        ("2k", "abc", "abd"),  # ES 66.67
        ("4k", "return", "yield x"),
    ]
    scores = score_lines(rows)
    assert list(scores) == ["all", "2k", "4k"]
    assert scores["2k"].n == 2 and scores["2k"].exact_match == 50.0
    assert scores["2k"].edit_similarity == pytest.approx((100 + 200 * 2 / 6) / 2)
    assert scores["all"].exact_match == pytest.approx(100 / 3)
    assert scores["all"].as_dict()["n"] == 3
    assert score_lines([]) == {}


def test_record_type_defaults():
    rec = RepoBenchRecord("r", "f.py", (), "", "", "x", "2k")
    assert rec.gold_snippet_index is None and rec.edit is None and rec.extra == {}
