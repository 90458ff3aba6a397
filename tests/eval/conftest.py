"""Fixtures for the evaluation harness tests: a per-test deadline guard and process counting.

``deadline(seconds, fn, *args)`` runs ``fn`` in a daemon thread and fails the test if it has
not returned in time (no pytest-timeout plugin needed); the sandbox must never hang.
``sandbox_processes()`` counts live processes started by the sandbox
(:func:`codedec_eval.isolation.sandbox_process_count`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from codedec_eval.isolation import sandbox_process_count


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


@pytest.fixture()
def sandbox_processes() -> Callable[[], int]:
    return sandbox_process_count
