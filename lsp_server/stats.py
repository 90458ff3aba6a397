"""``codedec stats``: acceptance rate and latency percentiles from the local telemetry log.

Terms: *shown* = completion events with text; *cancelled* = superseded or cancelled requests (left
out of the latencies); *acceptance rate* = accepted / (accepted +
rejected) — suggestions the client reported on; *latency* = request received -> response sent,
per source (``model`` calls vs typed-ahead ``cache`` hits); *first partial* = request received ->
first ``codedec/partial`` notification; *uncertainty* = model completions the uncertainty rules
withheld or cut (``uncertaintyCut`` / ``minFirstProb`` / ``minLineProb``), and the acceptance rate of the cut ones
beside the others' (accept/reject events joined to completions by request id).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codedec.constraint_report import constraint_cell, constraint_rates
from codedec.metrics import percentiles
from lsp_server.telemetry import default_path, read_events


def summarize(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The numbers ``codedec stats`` prints, as a dict (see the module docstring)."""
    served = [e for e in events if e.get("event") == "completion"]
    shown = [e for e in served if e.get("chars", 0) > 0]
    accepted = sum(1 for e in events if e.get("event") == "accept")
    rejected = sum(1 for e in events if e.get("event") == "reject")
    reported = accepted + rejected

    finished = [e for e in served if e.get("finish_reason") != "cancelled"]  # cancelled: not a latency

    def lat(source: str, key: str = "latency_ms") -> list[float]:
        return [float(e[key]) for e in finished if e.get("source") == source and e.get(key) is not None]

    def pct(values: list[float], qs: tuple[float, ...]) -> dict[str, float | None]:
        return {
            k: (None if v != v else round(v, 3)) for k, v in percentiles(values, qs).items()
        }  # NaN -> None

    model = [e for e in finished if e.get("source") == "model"]
    model_lat, cache_lat = lat("model"), lat("cache")
    first = lat("model", "first_partial_ms")
    return {
        "requests": len(served),
        "cancelled": len(served) - len(finished),
        "shown": len(shown),
        "accepted": accepted,
        "rejected": rejected,
        "acceptance_rate": accepted / reported if reported else None,
        "cache_hits": len(cache_lat),
        "cache_hit_rate": len(cache_lat) / len(served) if served else None,
        "latency_ms": {"model": pct(model_lat, (50, 95, 99)), "cache": pct(cache_lat, (50, 95))},
        "first_partial_ms": pct(first, (50, 95)),
        "constraints": constraint_rates(model),
        "uncertainty": _uncertainty(model, events),
    }


def _uncertainty(model: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How often the uncertainty rules acted, and acceptance with and without a cut."""
    verdict = {e.get("id"): e["event"] == "accept" for e in events if e.get("event") in ("accept", "reject")}

    def rate(group: list[dict[str, Any]]) -> float | None:
        known = [verdict[e.get("id")] for e in group if e.get("id") in verdict]
        return sum(known) / len(known) if known else None

    cut = [e for e in model if e.get("cut_chars")]
    shown_uncut = [e for e in model if not e.get("cut_chars") and e.get("chars", 0) > 0]
    n = len(model)
    withheld = sum(bool(e.get("withheld")) for e in model)
    return {
        "withheld": withheld,
        "cut": len(cut),
        "withheld_rate": withheld / n if n else None,
        "cut_rate": len(cut) / n if n else None,
        "acceptance_cut": rate(cut),
        "acceptance_uncut": rate(shown_uncut),
    }


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None or v != v:  # None or NaN
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.1f}"


def render(s: dict[str, Any]) -> str:
    lm, lc, fp = s["latency_ms"]["model"], s["latency_ms"]["cache"], s["first_partial_ms"]
    return "\n".join(
        [
            f"requests        {s['requests']}  (shown {s['shown']}, cancelled {s['cancelled']},"
            f" typed-ahead cache hits {s['cache_hits']}"
            f" = {_fmt(s['cache_hit_rate'], True)})",
            f"acceptance      {_fmt(s['acceptance_rate'], True)}  ({s['accepted']} accepted, {s['rejected']} rejected)",
            f"latency (model) p50 {_fmt(lm['p50'])} ms  p95 {_fmt(lm['p95'])} ms  p99 {_fmt(lm['p99'])} ms",
            f"latency (cache) p50 {_fmt(lc['p50'])} ms  p95 {_fmt(lc['p95'])} ms",
            f"first partial   p50 {_fmt(fp['p50'])} ms  p95 {_fmt(fp['p95'])} ms",
            *([f"constraints     {constraint_cell(s['constraints'])}  (off % / monitor answers on time-late-never %)"]
              if s.get("constraints") else []),
            *([f"uncertainty     withheld {u['withheld']} ({_fmt(u['withheld_rate'], True)}), cut {u['cut']}"
               f" ({_fmt(u['cut_rate'], True)}); acceptance cut {_fmt(u['acceptance_cut'], True)},"
               f" not cut {_fmt(u['acceptance_uncut'], True)}"]
              if (u := s.get("uncertainty")) and (u["withheld"] or u["cut"]) else []),
        ]
    )


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``codedec stats``."""
    parser.add_argument(
        "--log", type=Path, default=None, help=f"telemetry JSONL file (default {default_path()})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_stats(args: argparse.Namespace) -> int:
    """Print the summary of the log; 1 (with a message on stderr) when there is no log."""
    path = args.log or default_path()
    if not path.exists():
        print(
            f"codedec: no telemetry log at {path} (the server writes it as completions are served)",
            file=sys.stderr,
        )
        return 1
    summary = summarize(read_events(path))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{path}\n{render(summary)}")
    return 0
