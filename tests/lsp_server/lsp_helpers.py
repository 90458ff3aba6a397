"""Helpers for the language-server tests: the server command and a client that records partials.

``server_command(model)`` starts the real server process (``python -m lsp_server``);
``make_client()`` is a pytest-lsp client that also keeps every ``codedec/partial`` and
``codedec/status`` notification.
"""

from __future__ import annotations

import os
import sys

import pytest_lsp

SERVER_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


def server_command(model: str = "tiny-random") -> list[str]:
    return [sys.executable, "-m", "lsp_server", "--model", model]


def make_client() -> pytest_lsp.LanguageClient:
    client = pytest_lsp.make_test_lsp_client()
    client.partials = []
    client.statuses = []

    @client.feature("codedec/partial")
    def on_partial(ls, params):
        client.partials.append({"id": params.id, "uri": params.uri, "text": params.text})

    @client.feature("codedec/status")
    def on_status(ls, params):
        client.statuses.append({"state": params.state, "model": params.model, "message": params.message})

    return client
