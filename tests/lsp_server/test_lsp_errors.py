"""A model that cannot be loaded: the server keeps running, says why, and answers with empty results."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsp_helpers import SERVER_ENV, make_client, server_command
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")
T = 20


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=server_command("/nonexistent/model-dir"),
        client_factory=make_client,
        server_env=SERVER_ENV,
    ),
    scope="module",
)
async def client(lsp_client: LanguageClient, tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "t.jsonl"
    await asyncio.wait_for(
        lsp_client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                initialization_options={"telemetryPath": str(path)},
            )
        ),
        T,
    )
    yield
    await asyncio.wait_for(lsp_client.shutdown_session(), T)


async def test_failed_load_gives_messages_and_empty_results(client: LanguageClient):
    uri = "file:///work/x.py"
    text = "def f(x):\n    "
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=1, character=4),
            )
        ),
        T,
    )
    assert not result.items
    deadline = asyncio.get_running_loop().time() + T
    while not client.messages:
        assert asyncio.get_running_loop().time() < deadline, "no window/showMessage about the failed load"
        await asyncio.sleep(0.05)
    assert "could not be loaded" in client.messages[0].message
    assert any("completion failed" in m.message for m in client.log_messages)
    (reports,) = [r for r in client.progress_reports.values() if r]
    assert isinstance(reports[-1], types.WorkDoneProgressEnd) and "could not be loaded" in reports[-1].message
