"""Fixtures for the evaluation harness tests: a per-test deadline guard and process counting.

``deadline(seconds, fn, *args)`` runs ``fn`` in a daemon thread and fails the test if it has
not returned in time (no pytest-timeout plugin needed); the sandbox must never hang.
``sandbox_processes()`` counts live processes started by the sandbox (their command line
names a ``codedec-sbx-`` work directory), wherever they are in the process tree.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest


def _run_with_deadline(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture()
def deadline() -> Callable[..., Any]:
    return _run_with_deadline


def count_sandbox_processes() -> int:
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"codedec-sbx-" in cmdline and state != "Z":
            count += 1
    return count


@pytest.fixture()
def sandbox_processes() -> Callable[[], int]:
    return count_sandbox_processes
