"""The monitor at the cursor in a fresh workspace: the first request is constrained like a warm one.

Before, the language server was still starting when the first token after ``box.`` was chosen:
the query got ``[]`` at once, the 150 ms budget passed, and the processor left the row alone
(the tiny random model then writes anything). Now the query waits for the starting server, it
is sent before the prefill, and the cursor's trigger waits for it within the request's budget.
"""

from __future__ import annotations

import re

from codedec.engine import Engine
from codedec.monitor.client import close_all
from codedec.service import CompletionRequest, CompletionService

SHAPES = ("from dataclasses import dataclass\n\n\n@dataclass\nclass Box:\n    width: float\n    height: float\n\n"
          "    def area(self) -> float:\n        return self.width * self.height\n")
MAIN = "from shapes import Box\n\n\ndef total(boxes: list[Box]) -> float:\n    s = 0.0\n    for box in boxes:\n        s += box."
MEMBERS = {"width", "height", "area"}


def test_first_request_in_a_fresh_workspace_is_constrained(tiny, tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "shapes.py").write_text(SHAPES)
    main = tmp_path / "main.py"
    main.write_text(MAIN)
    service = CompletionService(Engine(tiny))
    try:
        result = service.complete(CompletionRequest(id=1, doc=str(main), prefix=MAIN, path=str(main),
                                                    decoding=("monitor",), max_tokens=8, time_budget_ms=None,
                                                    single_line=True), timeout=120)
        assert result.error is None, result.error
        name = re.match(r"[A-Za-z_]\w*", result.raw_text)
        valid = MEMBERS | {n for n in dir(object)}  # what jedi lists for a dataclass instance
        assert name is not None and name.group() in valid, (result.raw_text, result.stats)
    finally:
        service.close()
        close_all()


class _Silent:
    """A language server that never answers."""

    ready = True

    def request(self, path, text, offset):
        import concurrent.futures

        return concurrent.futures.Future()


def test_a_timed_out_constraint_is_reported_not_silent(tiny, monkeypatch):
    import codedec.processors.monitor as monitor

    monkeypatch.setattr(monitor, "monitor_for", lambda root, command=None: _Silent())
    service = CompletionService(Engine(tiny))
    try:
        mon = service.complete(CompletionRequest(id=1, doc="m", prefix="import os\nx = os.", decoding=("monitor",),
                                                 max_tokens=3, time_budget_ms=None, single_line=True), timeout=60)
        report = mon.stats["constraints"]["monitor"]
        assert report["cursor"] == "timed_out" and report["timed_out"] >= 1 and report["on_time"] == 0, report
        gram = service.complete(CompletionRequest(id=2, doc="g", prefix="x = ) + ", decoding=("grammar",),
                                                  max_tokens=3, time_budget_ms=None), timeout=60)
        report = gram.stats["constraints"]["grammar"]
        assert report["active"] is False and report["reason"], report
    finally:
        service.close()
