"""``codedec serve --model smollm2`` end to end: the embedded model behind the real server process.

The expected text is computed in-process with the ``smollm2`` fixture (same model, settings and
post-processing; greedy decoding is deterministic on one machine).
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsp_helpers import SERVER_ENV, make_client, server_command
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codedec.engine import Engine
from codedec.heuristics import SINGLE, decide_mode
from codedec.service import CompletionRequest, CompletionService, ServerSettings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

T = 60
OPTIONS = {"maxTokens": 24, "timeBudgetMs": 20000}
SOURCE = "def is_even(n: int) -> bool:\n    return "


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=server_command("smollm2"), client_factory=make_client, server_env=SERVER_ENV
    ),
    scope="module",
)
async def client(lsp_client: LanguageClient, tmp_path_factory, smollm2):
    telemetry = tmp_path_factory.mktemp("telemetry") / "events.jsonl"
    await asyncio.wait_for(
        lsp_client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                initialization_options={**OPTIONS, "telemetryPath": str(telemetry)},
            )
        ),
        T,
    )
    yield
    await asyncio.wait_for(lsp_client.shutdown_session(), T)


def reference(loaded, prefix: str, suffix: str) -> str:
    settings = ServerSettings.from_options(OPTIONS)
    mode = decide_mode(prefix, suffix, settings.line_mode)
    service = CompletionService(Engine(loaded))
    try:
        req = CompletionRequest.from_settings(
            settings, id=1, doc="x", prefix=prefix, suffix=suffix, single_line=mode == SINGLE
        )
        return service.submit(req).result(T).text  # post-processed by the service
    finally:
        service.close()


async def test_inline_completion_with_the_embedded_model(client: LanguageClient, smollm2):
    uri = "file:///work/even.py"
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)
        )
    )
    pos = types.Position(line=1, character=len("    return "))
    client.partials.clear()
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=pos,
            )
        ),
        T,
    )
    (item,) = result.items
    text = item.insert_text
    assert text and "\n" not in text  # mid-statement: one line
    assert "n" in text and "2" in text, text  # n % 2 == 0, or close to it
    assert client.partials
    assert text == reference(smollm2, SOURCE, "")
