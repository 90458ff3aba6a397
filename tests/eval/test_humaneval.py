"""HumanEval(+infilling) loaders, program building and malformed-data errors."""

from __future__ import annotations

import gzip
import json

import pytest
from codedec_eval.datafiles import DataError
from codedec_eval.humaneval import (
    HUMANEVAL_PATH,
    INFILLING_PATHS,
    load_humaneval,
    load_humaneval_infilling,
)


def test_vendored_data_and_licences_are_there():
    for path in [HUMANEVAL_PATH, *INFILLING_PATHS.values()]:
        assert path.is_file()
        assert "MIT License" in (path.parent / "LICENSE").read_text()


def test_load_humaneval():
    problems = load_humaneval()
    assert len(problems) == 164
    first = problems[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    program = first.program("    return True\n")
    assert program.startswith(first.prompt + "    return True\n\n")
    assert program.endswith("\ncheck(has_close_elements)\n")
    assert first.test in program


@pytest.mark.parametrize(("split", "count"), [("single-line", 1033), ("multi-line", 5815)])
def test_load_infilling(split, count):
    problems = load_humaneval_infilling(split)
    assert len(problems) == count
    p = problems[0]
    program = p.program(p.canonical_solution)
    assert program.startswith(p.prompt + p.canonical_solution + p.suffix)
    assert program.endswith(f"check({p.entry_point})\n")


def test_unknown_split_is_misuse():
    with pytest.raises(ValueError, match="split"):
        load_humaneval_infilling("three-line")


def _row(**override):
    row = {"task_id": "T/0", "prompt": "def f():\n", "entry_point": "f", "canonical_solution": "    return 1\n",
           "test": "def check(c):\n    assert c() == 1\n"}
    row.update(override)
    return row


def _write(path, lines, gz=False):
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_invalid_json_names_the_line(tmp_path):
    path = _write(tmp_path / "he.jsonl", [json.dumps(_row()), "", '{"task_id": "T/1", "prompt": '])
    with pytest.raises(DataError) as info:
        load_humaneval(path)
    assert info.value.line == 3 and f"{path}:3:" in str(info.value) and "invalid JSON" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_field_names_the_line_and_field(tmp_path):
    bad = _row()
    del bad["test"]
    path = _write(tmp_path / "he.jsonl.gz", [json.dumps(_row()), json.dumps(bad)], gz=True)
    with pytest.raises(DataError, match=r"he\.jsonl\.gz:2: missing field\(s\) test"):
        load_humaneval(path)


def test_mistyped_field_and_non_object(tmp_path):
    path = _write(tmp_path / "a.jsonl", [json.dumps(_row(prompt=3))])
    with pytest.raises(DataError, match=r":1: field 'prompt' should be str, got int"):
        load_humaneval(path)
    path = _write(tmp_path / "b.jsonl", [json.dumps(_row()), "[1, 2]"])
    with pytest.raises(DataError, match=":2: expected a JSON object"):
        load_humaneval(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_humaneval(tmp_path / "nope.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="cannot read"):
        load_humaneval(broken)


def test_infilling_requires_suffix(tmp_path):
    path = _write(tmp_path / "fim.jsonl", [json.dumps(_row())])
    with pytest.raises(DataError, match=":1: missing field\\(s\\) suffix"):
        load_humaneval_infilling("single-line", path)
