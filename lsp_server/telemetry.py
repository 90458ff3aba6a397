"""Local JSONL log of completion events (served, accepted, rejected) — nothing leaves the machine.

One JSON object per line: ``{"ts": <unix seconds>, "event": "completion" | "accept" | "reject", ...}``.
``completion`` events carry ``id``, ``uri``, ``language``, ``mode``, ``source`` (``model`` or
``cache``), ``chars``, ``latency_ms`` (request received -> response), ``first_partial_ms``,
``ttft_ms`` and ``finish_reason``; ``accept``/``reject`` carry what the client sent (at least the
request ``id``). ``codedec stats`` (``lsp_server.stats``) summarises the file.

The default path is ``$CODEDEC_CACHE/telemetry.jsonl`` or ``~/.cache/codedec/telemetry.jsonl``
(the same directory the model conversions use). Write failures are logged once and turn the log
off; they never reach the editor.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_path() -> Path:
    env = os.environ.get("CODEDEC_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "codedec"
    return base / "telemetry.jsonl"


def resolve_path(setting: str | None) -> Path | None:
    """The settings value -> a path: None means the default, ``""`` means off."""
    if setting is None:
        return default_path()
    if setting == "":
        return None
    return Path(setting).expanduser()


class TelemetryLog:
    """Appends events to a JSONL file (thread-safe). ``path=None`` logs nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as err:
                log.warning("telemetry off: cannot write %s: %s", self.path, err)
                self.path = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every well-formed event of the log (bad lines are skipped: a crash may cut the last one)."""
    events = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "event" in obj:
                events.append(obj)
    return events
