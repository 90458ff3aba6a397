"""codedec_eval: the evaluation harness (HumanEval, HumanEval-infilling, RepoBench) — quality and latency.

Modules, one concept each:

- ``sandbox`` (+ ``isolation``, ``sandbox_launcher``): run generated code in a confined subprocess.
- ``metrics``: pass@k, exact match, edit similarity, percentiles.
- ``datafiles``: JSONL/Parquet readers with file:line errors (``DataError``).
- ``humaneval``: the vendored HumanEval(+infilling) data as typed problems and checking programs.
- ``repobench``: RepoBench v1.1 records, the official prompt layout, first-line extraction, EM/ES.
- ``build_repobench``: RepoBench-style records from any local Python repository (optionally with edits).
- ``tasks``: the benchmarks as runner tasks; ``runner``: configurations, resumable results, summary;
  ``report``: table and plot; ``cli``: ``codedec eval ...``.
"""
