"""Fixtures shared by the tests of ``codedec``."""

from __future__ import annotations

import pytest

from codedec.engine import Engine
from codedec.service import CompletionService


@pytest.fixture()
def service(tiny):
    """A ``CompletionService`` over the tiny random model, closed after the test."""
    svc = CompletionService(Engine(tiny))
    yield svc
    svc.close()
