"""Kernel-test fixtures: run Triton through its interpreter on CPU, for one test at a time.

``triton_interpret`` sets ``TRITON_INTERPRET=1`` with ``monkeypatch`` (restored after the test), so
nothing leaks into other tests or their subprocesses. This works because ``codedec.kernels``
wraps its kernels with ``triton.jit`` lazily, per interpret mode, at launch time. With a CUDA
device the fixture does nothing: the compiled kernel runs.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (see ``one_thread`` in tests/conftest.py)."""


@pytest.fixture()
def triton_interpret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The device to put kernel inputs on: ``cuda`` if present, else ``cpu`` under the interpreter."""
    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return "cpu"
