"""What the constraints did, summed over completions: the numbers behind "visible off-switches".

Each completion's ``stats["constraints"]`` holds, per constraint that can switch itself off
(grammar, monitor), its ``report()`` (``ProcessorChain.reports``). Eval rows and the server's
telemetry events carry it; this module turns a list of them into rates (``summary.json``,
``codedec stats``) and the one-cell text the eval table shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def constraint_rates(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per constraint (grammar, monitor): the % of rows where it was switched off, and for the
    monitor the % of its triggers answered on time, late and never (timed out)."""
    out: dict[str, dict[str, float]] = {}
    names = sorted({name for r in rows for name in (r.get("constraints") or {})})
    for name in names:
        reports = [r["constraints"][name] for r in rows if name in (r.get("constraints") or {})]
        rates = {"rows": len(reports), "off_pct": 100.0 * sum(not x.get("active", True) for x in reports) / len(reports)}
        triggers = sum(int(x.get("triggers", 0)) for x in reports)
        if triggers:
            for key in ("on_time", "late", "timed_out"):
                rates[f"{key}_pct"] = 100.0 * sum(int(x.get(key, 0)) for x in reports) / triggers
            rates["triggers"] = triggers
        reasons = Counter(x.get("reason") for x in reports if not x.get("active", True) and x.get("reason"))
        if reasons:
            rates["off_reasons"] = dict(reasons.most_common(5))
        out[name] = rates
    return out


def constraint_cell(rates: dict[str, dict[str, Any]]) -> str:
    """``grammar off 3%; monitor off 0% 80-5-15`` — a constraint that switched itself off is visible."""
    parts = []
    for name, r in rates.items():
        text = f"{name} off {r['off_pct']:.0f}%"
        if "on_time_pct" in r:
            text += f" {r['on_time_pct']:.0f}-{r['late_pct']:.0f}-{r['timed_out_pct']:.0f}"
        parts.append(text)
    return "; ".join(parts)


def constraint_line(constraints: dict[str, dict[str, Any]]) -> str:
    """One completion's reports in words, for ``codedec complete``'s stderr line:
    ``monitor on (cursor answered; 2 triggers: 1 on time, 1 late, 0 timed out); grammar OFF: ...``."""
    parts = []
    for name, r in constraints.items():
        if not r.get("active", True):
            parts.append(f"{name} OFF: {r.get('reason') or 'no reason given'}")
            continue
        text = f"{name} on"
        if "triggers" in r:
            text += (f" (cursor {r.get('cursor', 'none')}; {r['triggers']} triggers: {r.get('on_time', 0)} on time, "
                     f"{r.get('late', 0)} late, {r.get('timed_out', 0)} timed out)")
        parts.append(text)
    return "; ".join(parts)
