"""RepoBench-C (v1.1) next-line completion: records, prompts and scores as the official harness.

Record schema (Liu et al. 2023, "RepoBench"; HF ``tianyang/repobench_python_v1.1``), one
JSON object per line or one Parquet row:

* ``repo_name``, ``file_path`` — where the cursor is;
* ``context`` — cross-file snippets, a list of ``{"path", "snippet"}`` (``identifier`` and
  other keys allowed); ``gold_snippet_index`` — the snippet that defines what the next line
  uses (optional, -1 or absent when none);
* ``import_statement`` — the file's import block; ``cropped_code`` — the in-file code before
  the cursor (imports removed); ``next_line`` — the target;
* ``level`` — prompt-size bucket ("2k", "4k", ...); optional ``all_code``, ``created_at``,
  ``token_num``; optional ``edit`` (ours, see :mod:`codedec_eval.build_repobench`).

Prompt (the official ``construct_prompt``): ``# Repo Name: <repo>`` then, per snippet,
``# Path: <path>`` + snippet + blank line; then ``# Path: <file_path>``, the import
statement and the cropped code, ending in a newline; runs of 4+ newlines collapse to 2.
Over the token budget, cross-file lines are dropped from the end. Unlike the official
harness we then also drop in-file lines from the front when that alone is still too long
(the official code would overflow the model's context), and we re-count after trimming.

Scoring: the prediction is the first generated line that is not blank, a ``#`` comment
or inside a docstring (:func:`first_code_line`); exact match is whitespace-token equality
and edit similarity is ``fuzz.ratio`` on the raw lines, both reported 0–100 per level and
overall (the overall value is the mean over all records, i.e. RepoBench's weighted mean).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedec_eval.datafiles import DataError, read_records, require
from codedec_eval.metrics import edit_similarity, exact_match

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Snippet:
    path: str
    snippet: str


@dataclass(frozen=True)
class RepoBenchRecord:
    """One next-line completion problem; see the module docstring for the fields."""

    repo_name: str
    file_path: str
    context: tuple[Snippet, ...]
    import_statement: str
    cropped_code: str
    next_line: str
    level: str
    gold_snippet_index: int | None = None
    all_code: str | None = None
    edit: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


_REQUIRED = {"repo_name": str, "file_path": str, "context": list, "import_statement": str,
             "cropped_code": str, "next_line": str, "level": str}
_KNOWN = set(_REQUIRED) | {"gold_snippet_index", "all_code", "edit"}


def record_from_dict(row: dict[str, Any], path: str | Path = "<record>", line: int = 0) -> RepoBenchRecord:
    """Validate one raw row and make it a record; DataError (with ``path:line``) when malformed."""
    require(row, _REQUIRED, path, line)
    snippets = []
    for i, item in enumerate(row["context"]):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) \
                or not isinstance(item.get("snippet"), str):
            raise DataError(path, line, f"context[{i}] must be an object with string 'path' and 'snippet'")
        snippets.append(Snippet(item["path"], item["snippet"]))
    gold = row.get("gold_snippet_index")
    if gold is not None and (not isinstance(gold, int) or isinstance(gold, bool) or gold >= len(snippets)):
        raise DataError(path, line, f"gold_snippet_index {gold!r} is not an index into context "
                                    f"({len(snippets)} snippets)")
    edit = row.get("edit")
    if edit is not None and not (isinstance(edit, dict) and isinstance(edit.get("kind"), str)):
        raise DataError(path, line, "edit must be an object with a string 'kind'")
    return RepoBenchRecord(
        repo_name=row["repo_name"], file_path=row["file_path"], context=tuple(snippets),
        import_statement=row["import_statement"], cropped_code=row["cropped_code"],
        next_line=row["next_line"], level=row["level"],
        gold_snippet_index=gold if gold is not None and gold >= 0 else None,
        all_code=row.get("all_code"), edit=edit,
        extra={k: v for k, v in row.items() if k not in _KNOWN})


def record_to_dict(record: RepoBenchRecord) -> dict[str, Any]:
    """The JSON-ready row for ``record`` (the inverse of :func:`record_from_dict`)."""
    row: dict[str, Any] = {
        "repo_name": record.repo_name, "file_path": record.file_path,
        "context": [{"path": s.path, "snippet": s.snippet} for s in record.context],
        "import_statement": record.import_statement, "cropped_code": record.cropped_code,
        "next_line": record.next_line, "level": record.level,
        "gold_snippet_index": record.gold_snippet_index if record.gold_snippet_index is not None else -1,
    }
    if record.all_code is not None:
        row["all_code"] = record.all_code
    if record.edit is not None:
        row["edit"] = record.edit
    row.update(record.extra)
    return row


def load_repobench(path: str | Path) -> list[RepoBenchRecord]:
    """All records of a RepoBench v1.1 JSONL(.gz) or Parquet file, in order.

    Raises DataError naming the file and line (row) for malformed data, ImportError
    ("pip install pyarrow") for Parquet without pyarrow.
    """
    return [record_from_dict(row, path, line) for line, row in read_records(path)]


# ---------------------------------------------------------------- prompt


def cross_file_prompt(record: RepoBenchRecord) -> str:
    parts = [f"# Repo Name: {record.repo_name}\n"]
    parts += [f"# Path: {s.path}\n{s.snippet}\n\n" for s in record.context]
    return "".join(parts)


def in_file_prompt(record: RepoBenchRecord) -> str:
    return f"# Path: {record.file_path}\n{record.import_statement}\n{record.cropped_code}\n"


def build_prompt(record: RepoBenchRecord, count_tokens: CountTokens | None = None,
                 max_tokens: int | None = None) -> str:
    """The completion prompt for ``record``, at most ``max_tokens`` by ``count_tokens`` if given.

    1. cross = repo line + path-commented snippets; in_file = path line + imports + code + "\\n".
    2. While over budget, drop cross-file lines from the end (estimating with per-line
       counts, then verifying on the joined text); an emptied cross part disappears.
    3. Still over: drop in-file lines after its ``# Path:`` line, oldest first.
    4. Collapse 4+ newlines to 2.
    """
    cross, in_file = cross_file_prompt(record), in_file_prompt(record)
    if count_tokens is not None and max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        in_tokens = count_tokens(in_file)
        cross = _trim_end(cross, count_tokens, max_tokens - in_tokens)
        if not cross:
            in_file = _trim_front(in_file, count_tokens, max_tokens)
    return re.sub(r"\n{4,}", "\n\n", cross + in_file)


def _trim_end(text: str, count_tokens: CountTokens, budget: int) -> str:
    """Drop whole lines from the end of ``text`` until it fits in ``budget`` tokens ("" if never)."""
    if budget <= 0:
        return ""
    lines = text.split("\n")
    excess = count_tokens(text) - budget
    keep = len(lines)
    while excess > 0 and keep > 0:
        keep -= 1
        excess -= count_tokens(lines[keep])
    while keep > 0:  # per-line counts miss the newline tokens: verify
        candidate = "\n".join(lines[:keep]) + ("\n\n" if keep < len(lines) else "")
        if count_tokens(candidate) <= budget:
            return candidate
        keep -= 1
    return ""


def _trim_front(in_file: str, count_tokens: CountTokens, budget: int) -> str:
    if count_tokens(in_file) <= budget:
        return in_file
    header, _, body = in_file.partition("\n")
    lines = body.split("\n")
    excess = count_tokens(in_file) - budget
    start = 0
    while excess > 0 and start < len(lines) - 1:
        excess -= count_tokens(lines[start])
        start += 1
    while start < len(lines) - 1 and count_tokens(header + "\n" + "\n".join(lines[start:])) > budget:
        start += 1
    return header + "\n" + "\n".join(lines[start:])


# ---------------------------------------------------------------- scoring

_DOC_QUOTES = ('"""', "'''")


def first_code_line(generated: str) -> str:
    """The first line of ``generated`` that is not blank, a ``#`` comment or docstring text.

    As RepoBench's ``get_first_line_not_comment`` (Python), except that a docstring that
    opens and closes on one line is skipped on its own instead of starting a block. When
    every line is skipped, the first line (after leading newlines) is returned.
    """
    lines = generated.lstrip("\n").split("\n")
    in_doc: str | None = None
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if in_doc is not None:
            if s.endswith(in_doc):
                in_doc = None
            continue
        quote = next((q for q in _DOC_QUOTES if s.startswith(q)), None)
        if quote is not None:
            if not (len(s) >= 6 and s.endswith(quote)):
                in_doc = quote
            continue
        if s.startswith("#"):
            continue
        return line
    return lines[0]


@dataclass(frozen=True)
class LineScore:
    n: int
    exact_match: float  # percent
    edit_similarity: float  # 0-100

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "em": self.exact_match, "es": self.edit_similarity}


def score_lines(rows: Iterable[tuple[str, str, str]]) -> dict[str, LineScore]:
    """Score ``(level, predicted_line, reference_line)`` rows: ``{"all": ..., <level>: ...}``.

    Predictions are compared as given (apply :func:`first_code_line` first). Levels
    appear in order of first occurrence after ``"all"``; an empty input gives ``{}``.
    """
    groups: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    for level, pred, ref in rows:
        scored = (exact_match(pred, ref), edit_similarity(pred, ref))
        groups["all"].append(scored)
        groups[level].append(scored)
    out = {}
    for level in sorted(groups, key=lambda k: k != "all"):
        values = groups[level]
        out[level] = LineScore(
            n=len(values),
            exact_match=100.0 * sum(em for em, _ in values) / len(values),
            edit_similarity=sum(es for _, es in values) / len(values))
    return out
