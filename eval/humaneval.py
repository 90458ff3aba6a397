"""HumanEval and HumanEval-infilling: typed problems and the programs that check a completion.

The data is vendored under ``data/`` of this package with its MIT licence (OpenAI):
``data/humaneval/HumanEval.jsonl.gz`` (164 problems, Chen et al. 2021) and
``data/humaneval-infilling/HumanEval-{Single,Multi}LineInfilling.jsonl.gz`` (Bavarian et
al. 2022, "Efficient Training of Language Models to Fill in the Middle"; 1033 single-line
and 5815 multi-line spans). A ``path`` argument reads another copy of the same format.

This module builds the program text only; running it is :mod:`codedec_eval.sandbox`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from codedec_eval.datafiles import read_jsonl, require

DATA_DIR = Path(__file__).with_name("data")
HUMANEVAL_PATH = DATA_DIR / "humaneval" / "HumanEval.jsonl.gz"
INFILLING_PATHS = {
    "single-line": DATA_DIR / "humaneval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": DATA_DIR / "humaneval-infilling" / "HumanEval-MultiLineInfilling.jsonl.gz",
}
InfillingSplit = Literal["single-line", "multi-line"]


@dataclass(frozen=True)
class HumanEvalProblem:
    """One HumanEval problem: complete ``prompt`` (a signature and docstring) into a function."""

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str

    def program(self, completion: str) -> str:
        """The program that passes iff ``completion`` is correct (as the official harness builds it)."""
        return f"{self.prompt}{completion}\n{self.test}\ncheck({self.entry_point})\n"


@dataclass(frozen=True)
class InfillingProblem:
    """One HumanEval-infilling span: fill the middle between ``prompt`` and ``suffix``.

    ``canonical_solution`` is the removed span (whole lines, each ending in a newline).
    """

    task_id: str
    prompt: str
    suffix: str
    entry_point: str
    canonical_solution: str
    test: str

    def program(self, middle: str) -> str:
        """The program that passes iff ``middle`` fills the gap correctly."""
        return f"{self.prompt}{middle}{self.suffix}\n{self.test}\ncheck({self.entry_point})\n"


_HUMANEVAL_FIELDS = {k: str for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test")}
_INFILLING_FIELDS = {**_HUMANEVAL_FIELDS, "suffix": str}


def load_humaneval(path: str | Path | None = None) -> list[HumanEvalProblem]:
    """The HumanEval problems in file order (the vendored 164 unless ``path`` is given).

    Raises DataError (a ValueError) naming the file and line for malformed data.
    """
    path = Path(path) if path is not None else HUMANEVAL_PATH
    problems = []
    for line, row in read_jsonl(path):
        require(row, _HUMANEVAL_FIELDS, path, line)
        problems.append(HumanEvalProblem(**{k: row[k] for k in _HUMANEVAL_FIELDS}))
    return problems


def load_humaneval_infilling(split: InfillingSplit = "single-line",
                             path: str | Path | None = None) -> list[InfillingProblem]:
    """The HumanEval-infilling problems of ``split`` in file order.

    Raises ValueError for an unknown split, DataError for malformed data.
    """
    if split not in INFILLING_PATHS:
        raise ValueError(f"unknown infilling split {split!r}; expected one of {sorted(INFILLING_PATHS)}")
    path = Path(path) if path is not None else INFILLING_PATHS[split]
    problems = []
    for line, row in read_jsonl(path):
        require(row, _INFILLING_FIELDS, path, line)
        problems.append(InfillingProblem(**{k: row[k] for k in _INFILLING_FIELDS}))
    return problems
