"""Presenting an evaluation summary: the side-by-side table and the quality-vs-latency plot.

Input is the dict :func:`codedec_eval.runner.run_eval` writes to ``summary.json``; nothing
here runs a model. The table is a ``rich.table.Table`` (the caller prints it); the plot is a
PNG written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from codedec.constraint_report import constraint_cell


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def quality_keys(summary: dict[str, Any], limit: int = 3) -> list[str]:
    """Overall quality metric names for the table: the primary one first (per-level ones stay in the JSON)."""
    keys: list[str] = []
    for cfg in summary["configs"].values():
        keys += [k for k in cfg["quality"] if k not in keys and (k.startswith("pass@") or "@" not in k)]
    primary = summary.get("primary")
    keys.sort(key=lambda k: (k != primary, k))
    return keys[:limit]


def _header(key: str) -> str:
    return {"exact_match": "EM %", "em": "EM %", "es": "ES"}.get(key, f"{key} %" if key.startswith("pass@") else key)


# a strategy's summary figure shown as a column where some configuration has it: (key, header, digits)
STRATEGY_COLUMNS = (("paused_pct", "paused %", 1), ("tokens_per_forward", "tok/fwd", 2))


def render_table(summary: dict[str, Any]) -> Table:
    """One row per configuration: quality, p50/p95 latency, tokens/s, mean prompt tokens, n.

    Time to first token and reused-prompt counts are in ``summary.json``.
    """
    task = summary["task"]["task"]
    split = summary["task"].get("split")
    title = f"{task}{f' ({split})' if split else ''} — {summary['model']}"
    table = Table(title=title)
    table.add_column("config", style="bold", no_wrap=True)
    keys = quality_keys(summary)
    for key in keys:
        table.add_column(_header(key), justify="right", no_wrap=True)
    for name in ("p50 ms", "p95 ms", "tok/s", "prompt tok", "n"):
        table.add_column(name, justify="right", no_wrap=True)
    constrained = any(cfg.get("constraints") for cfg in summary["configs"].values())
    if constrained:
        table.add_column("constraints (off % / monitor answers on time-late-never %)")
    strategy_columns = [col for col in STRATEGY_COLUMNS
                        if any(col[0] in (cfg.get("strategy") or {}) for cfg in summary["configs"].values())]
    for _key, header, _digits in strategy_columns:
        table.add_column(header, justify="right", no_wrap=True)
    for label, cfg in summary["configs"].items():
        q, strategy = cfg["quality"], cfg.get("strategy") or {}
        table.add_row(
            label, *[_fmt(q.get(k, math.nan)) for k in keys],
            _fmt(cfg["latency_ms"]["p50"], 0), _fmt(cfg["latency_ms"]["p95"], 0),
            _fmt(cfg["tokens_per_s"], 0 if cfg["tokens_per_s"] >= 100 else 1),
            _fmt(cfg["mean_prompt_tokens"], 0), str(cfg["n"]),
            *([constraint_cell(cfg.get("constraints") or {})] if constrained else []),
            *[_fmt(strategy[key], digits) if key in strategy else "-" for key, _header, digits in strategy_columns])
    return table


def plot_quality_vs_latency(summary: dict[str, Any], path: str | Path) -> Path:
    """Scatter the primary quality metric against p50 latency, one labelled point per configuration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    primary = summary.get("primary", "")
    fig = Figure(figsize=(6.4, 4.4), dpi=110)  # no pyplot: no global state, no display
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, cfg in summary["configs"].items():
        x, y = cfg["latency_ms"]["p50"], cfg["quality"].get(primary, math.nan)
        if x is None or y is None or math.isnan(x) or math.isnan(y):
            continue
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("p50 completion latency (ms)")
    ax.set_ylabel({"es": "edit similarity (0-100)", "em": "exact match (%)"}.get(
        primary, f"{primary} (%)" if primary.startswith("pass@") else primary))
    ax.set_title(f"{summary['task']['task']} — {summary['model']}", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
