"""Benchmarks as tasks for the runner: which text to complete, and how to score a completion.

A :class:`Task` knows nothing of models or decoding: it lists :class:`Sample`\\ s (text before
and after the cursor), scores one completion text into a JSON-able dict, and reduces the
scored rows of one configuration to quality numbers (percentages). The runner
(:mod:`codedec_eval.runner`) does generation, timing, files and tables.

* :class:`HumanEvalTask` — complete the function; run prompt + completion + tests in the
  sandbox; pass@k (Chen et al. 2021) over the samples of each problem.
* :class:`InfillingTask` — fill the middle (FIM via the model's preset, prefix-only for models
  without FIM tokens — the engine decides); run the program; pass@1 and span exact match.
* :class:`RepoBenchTask` — next line after a RepoBench prompt; first code line; EM and ES,
  overall and per level.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedec_eval.humaneval import HumanEvalProblem, InfillingProblem
from codedec_eval.metrics import mean_pass_at_k, span_exact_match
from codedec_eval.repobench import RepoBenchRecord, build_prompt, first_code_line, score_lines
from codedec_eval.sandbox import run_program

# The stop sequences of the Codex paper for HumanEval: the function body ends at the next
# top-level statement.
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class Sample:
    """One cursor to complete: ``prefix`` + <completion> + ``suffix``; ``meta`` goes into the rows;
    ``path``: the real file the cursor is in, when known (the monitor opens it there; cross-file
    context is gathered from its workspace). ``context``: cross-file chunks the sample brings
    (``{"path", "text"}``; they are used instead of gathering), shown with ``repo_name`` before
    the file named ``shown_path``."""

    task_id: str
    prefix: str
    suffix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    context: tuple[dict[str, str], ...] = ()
    repo_name: str = ""
    shown_path: str = ""


class Task:
    """Base of the benchmark tasks; subclasses set the class attributes and the three methods."""

    name = "task"
    primary = "score"  # the summary key shown first and plotted against latency
    single_line = False
    stop_strings: tuple[str, ...] = ()
    max_new_tokens = 128

    def samples(self) -> list[Sample]:
        raise NotImplementedError

    def score(self, sample: Sample, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies the task's results (part of the resume fingerprint)."""
        return {"task": self.name, "single_line": self.single_line, "stop_strings": list(self.stop_strings)}


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _pass_at_ks(rows: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        counts[row["task_id"]][0] += 1
        counts[row["task_id"]][1] += bool(row["passed"])
    if not counts:
        return {}
    n_min = min(n for n, _ in counts.values())
    pairs = [(n, c) for n, c in counts.values()]
    return {f"pass@{k}": 100.0 * mean_pass_at_k(pairs, k) for k in ks if k <= n_min}


class HumanEvalTask(Task):
    name = "humaneval"
    primary = "pass@1"
    stop_strings = HUMANEVAL_STOPS
    max_new_tokens = 300

    def __init__(self, problems: Sequence[HumanEvalProblem], *, timeout_s: float = 10.0,
                 ks: Sequence[int] = (1, 10, 100)) -> None:
        self.problems = {p.task_id: p for p in problems}
        self.timeout_s, self.ks = timeout_s, tuple(ks)

    def samples(self) -> list[Sample]:
        return [Sample(p.task_id, p.prompt) for p in self.problems.values()]

    def score(self, sample: Sample, text: str) -> dict[str, Any]:
        result = run_program(self.problems[sample.task_id].program(text), timeout_s=self.timeout_s)
        return {"passed": result.passed, "status": result.status,
                "error": "" if result.passed else _error_line(result.stderr_tail) or result.detail}

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        return _pass_at_ks(rows, self.ks)


def infill_middle(text: str, single_line: bool, suffix: str) -> str:
    """The middle to splice between prompt and suffix, as whole lines ending in a newline.

    Single-line: the first line of ``text``. Multi-line: ``text`` cut before the first line
    that repeats the suffix's first non-blank line (models without FIM tokens run on into
    the suffix), else the whole text.
    """
    if single_line:
        return text.split("\n", 1)[0] + "\n"
    lines = text.split("\n")
    anchor = next((ln.strip() for ln in suffix.split("\n") if ln.strip()), None)
    if anchor is not None:
        for i, line in enumerate(lines):
            if line.strip() == anchor:
                lines = lines[:i]
                break
    middle = "\n".join(lines)
    return middle if middle.endswith("\n") else middle + "\n"


class InfillingTask(Task):
    name = "humaneval-infilling"
    primary = "pass@1"
    max_new_tokens = 128

    def __init__(self, problems: Sequence[InfillingProblem], split: str, *, timeout_s: float = 10.0) -> None:
        self.problems = {p.task_id: p for p in problems}
        self.split, self.timeout_s = split, timeout_s
        self.single_line = split == "single-line"
        if self.single_line:
            self.max_new_tokens = 64

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split}

    def samples(self) -> list[Sample]:
        return [Sample(p.task_id, p.prompt, p.suffix) for p in self.problems.values()]

    def score(self, sample: Sample, text: str) -> dict[str, Any]:
        problem = self.problems[sample.task_id]
        middle = infill_middle(text, self.single_line, problem.suffix)
        result = run_program(problem.program(middle), timeout_s=self.timeout_s)
        return {"passed": result.passed, "status": result.status, "middle": middle,
                "exact_match": span_exact_match(middle, problem.canonical_solution),
                "error": "" if result.passed else _error_line(result.stderr_tail) or result.detail}

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        if not rows:
            return {}
        out = _pass_at_ks(rows, (1,))
        out["exact_match"] = 100.0 * sum(bool(r["exact_match"]) for r in rows) / len(rows)
        return out


class RepoBenchTask(Task):
    name = "repobench"
    primary = "es"
    max_new_tokens = 64
    single_line = True  # only the next line is scored: generate that line, not 64 tokens

    CONTEXT_SOURCES = ("inline", "records", "repo", "none")

    def __init__(self, records: Sequence[RepoBenchRecord], *, count_tokens: Callable[[str], int] | None = None,
                 max_prompt_tokens: int | None = None, repo_root: Path | None = None,
                 context_source: str = "inline") -> None:
        """``repo_root``: the checkout the records were built from; each sample then names its
        file there (``repo_root / file_path``), so a language-server-backed component (monitor)
        resolves the file's imports in the real repository.

        ``context_source``: where the cross-file context comes from. ``inline``: the records'
        snippets written into the prompt text as the official harness does (the run's context
        mode is then left at ``none``); ``records``: the records' snippets handed to the service
        as chunks, fitted by the configuration's context mode (``context:truncate``...);
        ``repo``: none given — the service gathers it from ``repo_root`` as it does for an
        editor (the prompt is the file's real text before the target line); ``none``: in-file only.
        """
        if context_source not in self.CONTEXT_SOURCES:
            raise ValueError(f"context_source must be one of {self.CONTEXT_SOURCES}, got {context_source!r}")
        if context_source == "repo" and repo_root is None:
            raise ValueError("context_source 'repo' needs the records' repo_root")
        self.records = list(records)
        self.count_tokens, self.max_prompt_tokens = count_tokens, max_prompt_tokens
        self.repo_root = repo_root
        self.context_source = context_source

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "max_prompt_tokens": self.max_prompt_tokens}
        if self.context_source != "inline":
            out["context_source"] = self.context_source
        return out

    def _file_prefix(self, rec: RepoBenchRecord) -> str:
        """The file's real text before the target line (``line_no``), else imports + cropped code."""
        line_no = rec.extra.get("line_no")
        if self.repo_root is not None and isinstance(line_no, int):
            text = (self.repo_root / rec.file_path).read_text(encoding="utf-8", errors="replace")
            lines = text.split("\n")
            if 0 < line_no <= len(lines) and lines[line_no - 1].strip() == rec.next_line.strip():
                return "\n".join(lines[: line_no - 1]) + "\n"
        return f"{rec.import_statement}\n{rec.cropped_code}\n"

    def samples(self) -> list[Sample]:
        out = []
        for i, rec in enumerate(self.records):
            path = str(self.repo_root / rec.file_path) if self.repo_root is not None else None
            meta = {"level": rec.level, "next_line": rec.next_line}
            if self.context_source == "inline":
                prompt = build_prompt(rec, self.count_tokens, self.max_prompt_tokens)
                out.append(Sample(f"{i}:{rec.file_path}", prompt, meta=meta, path=path))
                continue
            context = tuple({"path": s.path, "text": s.snippet} for s in rec.context) \
                if self.context_source == "records" else ()
            prefix = self._file_prefix(rec) if self.context_source == "repo" \
                else f"{rec.import_statement}\n{rec.cropped_code}\n"
            out.append(Sample(f"{i}:{rec.file_path}", prefix, meta=meta,
                              path=path if self.context_source == "repo" else None,
                              context=context, repo_name=rec.repo_name, shown_path=rec.file_path))
        return out

    def score(self, sample: Sample, text: str) -> dict[str, Any]:
        pred = first_code_line(text)
        scores = score_lines([(sample.meta["level"], pred, sample.meta["next_line"])])["all"]
        return {"pred_line": pred, "em": scores.exact_match == 100.0, "es": scores.edit_similarity}

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        scores = score_lines((r["level"], r["pred_line"], r["next_line"]) for r in rows)
        out: dict[str, float] = {}
        for level, s in scores.items():
            suffix = "" if level == "all" else f"@{level}"
            out[f"em{suffix}"], out[f"es{suffix}"] = s.exact_match, s.edit_similarity
        return out
