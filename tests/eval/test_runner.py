"""The runner end to end on the tiny random model: rows, summary, table, plot, resume; and the tasks."""

from __future__ import annotations

import io
import json

import pytest
from codedec_eval.humaneval import load_humaneval, load_humaneval_infilling
from codedec_eval.repobench import record_from_dict
from codedec_eval.runner import (
    PLOT_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    RunConfig,
    RunSettings,
    parse_configs,
    read_rows,
    run_eval,
)
from codedec_eval.tasks import HumanEvalTask, InfillingTask, RepoBenchTask, Sample, infill_middle
from rich.console import Console


def test_parse_configs():
    assert parse_configs("min-tokens,no-fences;no-fences") == [
        RunConfig(("min-tokens", "no-fences")), RunConfig(("no-fences",))]
    assert parse_configs("") == [RunConfig()] and parse_configs(None) == [RunConfig()]
    assert parse_configs(";min-tokens;") == [RunConfig(), RunConfig(("min-tokens",))]
    assert parse_configs("no-fences,min-tokens") == [RunConfig(("min-tokens", "no-fences"))]  # registry order
    heal_off = parse_configs(";no-heal")
    assert [c.label for c in heal_off] == ["plain", "no-heal"] and heal_off[1] == RunConfig((), heal=False)
    with pytest.raises(ValueError, match="unknown decoding component"):
        parse_configs("plain;nonsense")
    ada = parse_configs(";adadec;grammar,rpg,adadec")  # a strategy, named among the components
    assert [c.label for c in ada] == ["plain", "adadec", "rpg,grammar,adadec"]
    assert ada[2] == RunConfig(("rpg", "grammar"), strategy="adadec")
    import hashlib
    from dataclasses import asdict

    from codedec_eval.runner import _fingerprint

    task = HumanEvalTask([])
    before = json.dumps([task.describe(), "m", asdict(RunSettings()), {"decoding": [], "heal": True}], sort_keys=True)
    # runs from before strategies existed keep their fingerprints (re-running them resumes)
    assert _fingerprint(task, "m", RunSettings(), ada[0]) == hashlib.sha1(before.encode()).hexdigest()[:16]
    assert _fingerprint(task, "m", RunSettings(), ada[0]) != _fingerprint(task, "m", RunSettings(), ada[1])


@pytest.fixture()
def engine(tiny):
    from codedec.engine import Engine

    return Engine(tiny)


def test_humaneval_end_to_end_and_resume(engine, tmp_path, monkeypatch):
    task = HumanEvalTask(load_humaneval()[:3], timeout_s=5)
    configs = parse_configs(";min-tokens")
    settings = RunSettings(max_new_tokens=12)
    out = io.StringIO()
    summary = run_eval(task, engine, configs, settings, tmp_path, progress=False,
                       console=Console(file=out, width=120))
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert len(rows) == 6 and {r["config"] for r in rows} == {"plain", "min-tokens"}
    for row in rows:
        assert row["status"] in {"passed", "failed", "timeout", "killed", "output_limit"}
        assert 0 < row["new_tokens"] <= 12 and row["prompt_tokens"] > 0 and row["total_ms"] > 0
        assert isinstance(row["raw_completion"], str)  # the text before the editor post-processing
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == json.loads(json.dumps(summary))
    plain = summary["configs"]["plain"]
    assert plain["n"] == 3 and set(plain["quality"]) == {"pass@1"}
    assert plain["latency_ms"]["p50"] > 0 and plain["tokens_per_s"] > 0 and plain["mean_prompt_tokens"] > 0
    assert (tmp_path / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.getvalue()
    assert "pass@1 %" in table and "min-tokens" in table and "p95 ms" in table

    import codedec.complete

    calls = []
    real = codedec.complete.complete
    monkeypatch.setattr(codedec.complete, "complete", lambda *a, **k: calls.append(1) or real(*a, **k))
    with open(tmp_path / SAMPLES_FILE, "a") as f:
        f.write('{"fingerprint": "torn')  # an interrupted write
    again = run_eval(task, engine, configs, settings, tmp_path, progress=False)
    assert calls == [] and again["configs"] == summary["configs"]
    # a new configuration runs only its own samples (+ one warm-up)
    more = run_eval(task, engine, parse_configs(";no-heal"), settings, tmp_path, progress=False, plot=False)
    assert len(calls) == 3 + 1 and more["configs"]["no-heal"]["n"] == 3 and more["configs"]["plain"]["n"] == 3


def test_infilling_and_repobench_tasks_run(engine, tmp_path):
    task = InfillingTask(load_humaneval_infilling("single-line")[:2], "single-line", timeout_s=5)
    summary = run_eval(task, engine, parse_configs(""), RunSettings(max_new_tokens=8), tmp_path / "fim",
                       progress=False, plot=False)
    assert set(summary["configs"]["plain"]["quality"]) == {"pass@1", "exact_match"}
    row = {"repo_name": "r", "file_path": "a.py", "context": [{"path": "b.py", "snippet": "def f():\n    pass"}],
           "import_statement": "from b import f", "cropped_code": "x = 1", "next_line": "f()", "level": "2k"}
    task = RepoBenchTask([record_from_dict(row), record_from_dict({**row, "level": "4k"})],
                         count_tokens=len, max_prompt_tokens=500)
    summary = run_eval(task, engine, parse_configs(""), RunSettings(max_new_tokens=8), tmp_path / "rb",
                       progress=False, plot=False)
    quality = summary["configs"]["plain"]["quality"]
    assert {"em", "es", "em@2k", "es@4k"} <= set(quality)


def test_repobench_samples_name_their_file_under_repo_root(engine, tmp_path, monkeypatch):
    """With a repo root, the runner hands complete() the record's real file (the monitor opens it)."""
    import codedec.complete

    row = {"repo_name": "r", "file_path": "pkg/a.py", "context": [], "import_statement": "",
           "cropped_code": "x = 1", "next_line": "y = x", "level": "2k"}
    assert RepoBenchTask([record_from_dict(row)]).samples()[0].path is None
    task = RepoBenchTask([record_from_dict(row)], repo_root=tmp_path)
    assert task.samples()[0].path == str(tmp_path / "pkg" / "a.py")
    seen = []
    real = codedec.complete.complete

    def spy(*args, **kwargs):
        seen.append(kwargs.get("path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(codedec.complete, "complete", spy)
    run_eval(task, engine, parse_configs(""), RunSettings(max_new_tokens=4), tmp_path / "rb", progress=False,
             plot=False)
    assert seen[-1] == str(tmp_path / "pkg" / "a.py")


def test_task_scoring_without_a_model():
    he = HumanEvalTask(load_humaneval()[:1], timeout_s=5)
    sample = he.samples()[0]
    good = he.score(sample, he.problems[sample.task_id].canonical_solution)
    bad = he.score(sample, "    return None\n")
    assert good["passed"] and not bad["passed"] and "AssertionError" in bad["error"]
    rows = [{"task_id": "a", "passed": True}, {"task_id": "a", "passed": False},
            {"task_id": "b", "passed": False}, {"task_id": "b", "passed": False}]
    assert he.summarize(rows) == {"pass@1": 25.0}  # pass@10/100 need more samples
    he.ks = (1, 2)
    assert he.summarize(rows) == {"pass@1": 25.0, "pass@2": 50.0}

    rb = RepoBenchTask([])
    scored = rb.score(Sample("0", "", meta={"level": "2k", "next_line": "    y = f(x)"}), "\n    # c\n    y = f(x)\n")
    assert scored == {"pred_line": "    y = f(x)", "em": True, "es": 100.0}


@pytest.mark.parametrize(
    ("text", "single", "suffix", "middle"),
    [
        ("    return x\n    more\n", True, "", "    return x\n"),
        ("    return x", True, "", "    return x\n"),
        ("    a = 1\n    b = 2\n    return a + b\n", False, "    return a + b\n", "    a = 1\n    b = 2\n"),
        ("    a = 1", False, "\n\n    return a\n", "    a = 1\n"),
    ],
)
def test_infill_middle(text, single, suffix, middle):
    assert infill_middle(text, single, suffix) == middle


def test_cli_end_to_end(tmp_path, capsys):
    from codedec_eval.cli import main

    rich = pytest.importorskip("rich")
    from pathlib import Path

    data = tmp_path / "rb.jsonl"
    assert main(["build-repobench", "--repo", str(Path(rich.__file__).parent), "--out", str(data), "--n", "2"]) == 0
    assert len(data.read_text().splitlines()) == 2
    out = tmp_path / "he"
    assert main(["humaneval", "--model", "tiny-random", "--limit", "2", "--max-new-tokens", "6",
                 "--out", str(out), "--no-progress", "--decoding", ";no-heal"]) == 0
    assert (out / SUMMARY_FILE).exists() and "no-heal" in capsys.readouterr().out
    assert main(["repobench", "--data", str(tmp_path / "missing.jsonl"), "--model", "tiny-random"]) == 2
    assert main(["repobench", "--data", str(data), "--model", "tiny-random", "--repo-root", str(tmp_path)]) == 2
    assert "does not hold the records' files" in capsys.readouterr().err
    assert main(["repobench", "--data", str(data), "--model", "tiny-random", "--limit", "1", "--no-progress",
                 "--max-new-tokens", "4", "--repo-root", str(Path(rich.__file__).parent),
                 "--out", str(tmp_path / "rb")]) == 0
    assert main(["humaneval", "--decoding", "bogus"]) == 2


def test_schedule_interleaves_configs_one_problem_apart():
    from codedec_eval.runner import _schedule

    a, b = RunConfig(), RunConfig(("min-tokens",))
    samples = [Sample(f"p{i}", "x") for i in range(3)]
    order = [(c.label, s.task_id, k) for c, s, k in _schedule([a, b], samples, 2)]
    assert order == [
        ("plain", "p0", 0), ("plain", "p0", 1),
        ("plain", "p1", 0), ("min-tokens", "p0", 0), ("plain", "p1", 1), ("min-tokens", "p0", 1),
        ("plain", "p2", 0), ("min-tokens", "p1", 0), ("plain", "p2", 1), ("min-tokens", "p1", 1),
        ("min-tokens", "p2", 0), ("min-tokens", "p2", 1),
    ]
    for before, after in zip(order, order[1:], strict=False):
        assert before[0] == after[0] or before[1] != after[1]  # never the same prompt across configs


def test_samples_by_config_reads_several_runs(tmp_path):
    from codedec_eval.runner import samples_by_config

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"config": "plain", "task_id": "t1", "repeat": 0, "v": 1}\n'
                 '{"config": "plain", "task_id": "t1", "repeat": 1, "v": 2}\n{"torn')
    b.write_text('{"config": "plain", "task_id": "t1", "repeat": 0, "v": 3}\n'
                 '{"config": "rpg", "task_id": "t2", "repeat": 0, "v": 4}\n')
    got = samples_by_config([a, b, tmp_path / "missing.jsonl"])
    assert {c: {t: r["v"] for t, r in rows.items()} for c, rows in got.items()} == {
        "plain": {"t1": 3}, "rpg": {"t2": 4}}


def test_constraint_reports_reach_the_rows_summary_and_table():
    """A constraint that switched itself off is visible per row and as a rate (E13 item 3)."""
    from codedec.constraint_report import constraint_cell, constraint_rates

    rows = [
        {"constraints": {"grammar": {"active": True, "reason": ""},
                         "monitor": {"active": True, "triggers": 2, "on_time": 1, "late": 1, "timed_out": 0}}},
        {"constraints": {"grammar": {"active": False, "reason": "the grammar rejects the current line"},
                         "monitor": {"active": False, "reason": "RuntimeError: x", "triggers": 2, "on_time": 0,
                                     "late": 0, "timed_out": 2}}},
        {},
    ]
    rates = constraint_rates(rows)
    assert rates["grammar"]["off_pct"] == 50.0 and rates["grammar"]["rows"] == 2
    assert rates["grammar"]["off_reasons"] == {"the grammar rejects the current line": 1}
    assert (rates["monitor"]["on_time_pct"], rates["monitor"]["late_pct"], rates["monitor"]["timed_out_pct"]) == (
        25.0, 25.0, 50.0)
    assert constraint_cell(rates) == "grammar off 50%; monitor off 50% 25-25-50"


def run_two_problems(engine, tmp_path, configs: str, max_new_tokens: int):
    """Plain and one strategy on two HumanEval problems -> (summary, sample rows, printed table)."""
    task = HumanEvalTask(load_humaneval()[:2], timeout_s=5)
    out = io.StringIO()
    summary = run_eval(task, engine, parse_configs(configs), RunSettings(max_new_tokens=max_new_tokens), tmp_path,
                       progress=False, plot=False, console=Console(file=out, width=160))
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    return summary, rows, out.getvalue()


def test_adadec_pauses_reach_the_rows_summary_and_table(engine, tmp_path):
    summary, rows, printed = run_two_problems(engine, tmp_path, ";adadec", 6)
    ada = [r for r in rows if r["config"] == "adadec"]
    assert len(ada) == 2 and all(r["strategy_stats"]["steps"] >= 1 for r in ada)
    assert all("strategy_stats" not in r for r in rows if r["config"] == "plain")
    st = summary["configs"]["adadec"]["strategy"]
    assert st["steps"] == sum(r["strategy_stats"]["steps"] for r in ada)
    assert st["paused_pct"] == pytest.approx(100.0 * st["paused"] / st["steps"])
    assert "strategy" not in summary["configs"]["plain"] and "paused %" in printed


def test_suffix_speculation_reaches_the_summary_and_table(engine, tmp_path):
    summary, rows, printed = run_two_problems(engine, tmp_path, ";suffix", 12)
    by = {(r["config"], r["task_id"]): r for r in rows}
    for (config, task_id), row in by.items():  # lossless: the same completions as plain greedy
        if config == "suffix":
            assert row["completion"] == by[("plain", task_id)]["completion"]
    st = summary["configs"]["suffix"]["strategy"]
    assert st["tokens"] >= st["forwards"] > 0 and "paused_pct" not in st
    assert st["tokens_per_forward"] == pytest.approx(st["tokens"] / st["forwards"])
    assert "tok/fwd" in printed and "paused %" not in printed


def test_repobench_context_modes_compare_side_by_side(engine, tmp_path):
    """--context-source records: the snippets go to the service as chunks, and each configuration's
    context:MODE[:TOKENS] fits them; context:none sees the file only."""
    configs = parse_configs("context:none;context:truncate:200;context:longcodezip:200")
    assert [c.label for c in configs] == ["plain", "context:truncate:200", "context:longcodezip:200"]
    with pytest.raises(ValueError, match="context must be one of"):
        parse_configs("context:all")
    assert parse_configs("context:coarse:/4")[0].context_fraction == 4
    with pytest.raises(ValueError, match="context:MODE:/N"):
        parse_configs("context:coarse:/0")
    snippet = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(12))
    row = {"repo_name": "r", "file_path": "a.py", "context": [{"path": "b.py", "snippet": snippet}],
           "import_statement": "from b import helper_3", "cropped_code": "x = 1", "next_line": "y = helper_3(x)",
           "level": "2k"}
    task = RepoBenchTask([record_from_dict(row)], context_source="records")
    sample = task.samples()[0]
    assert sample.context == ({"path": "b.py", "text": snippet},) and "helper_0" not in sample.prefix
    summary = run_eval(task, engine, configs, RunSettings(max_new_tokens=4), tmp_path, progress=False, plot=False)
    rows = {r["config"]: r for r in read_rows(tmp_path / "samples.jsonl")}
    assert "context" not in rows["plain"]
    for label in ("context:truncate:200", "context:longcodezip:200"):
        assert 0 < rows[label]["context"]["tokens_out"] <= 200
        assert rows[label]["prompt_tokens"] > rows["plain"]["prompt_tokens"]
    assert rows["context:longcodezip:200"]["context"]["scored"] > 0
    assert set(summary["configs"]) == {"plain", "context:truncate:200", "context:longcodezip:200"}
    with pytest.raises(ValueError, match="repo_root"):
        RepoBenchTask([record_from_dict(row)], context_source="repo")
