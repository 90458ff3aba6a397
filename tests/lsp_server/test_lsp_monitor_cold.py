"""The monitor at the cursor through the real server: a fresh workspace, its first request.

``codedec serve`` (tiny-random model, ``decoding: monitor``) gets a file opened and, at once, an
inline completion right after ``box.``: the workspace's language server is not running yet (the
server starts it at ``didOpen``), and the member written must still be one the class has — the
random model alone writes anything (the same case in-process: ``tests/codedec/processors/
test_monitor_cold.py``).
"""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_lsp
from lsp_helpers import SERVER_ENV, make_client, server_command
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = 90
SHAPES = ("from dataclasses import dataclass\n\n\n@dataclass\nclass Box:\n    width: float\n    height: float\n\n"
          "    def area(self) -> float:\n        return self.width * self.height\n")
MAIN = "from shapes import Box\n\n\ndef total(boxes: list[Box]) -> float:\n    s = 0.0\n    for box in boxes:\n        s += box."
VALID = {"width", "height", "area"} | set(dir(object))  # what jedi lists for a dataclass instance


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=server_command(), client_factory=make_client, server_env=SERVER_ENV),
    scope="module",
)
async def client(lsp_client: LanguageClient, tmp_path_factory):
    await asyncio.wait_for(
        lsp_client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"maxTokens": 8, "timeBudgetMs": 60000, "debounceMs": 0, "decoding": ["monitor"],
                                    "telemetryPath": ""},
        )),
        T,
    )
    yield
    await asyncio.wait_for(lsp_client.shutdown_session(), T)


async def test_first_request_in_a_fresh_workspace_is_constrained(client: LanguageClient, tmp_path):
    deadline = asyncio.get_running_loop().time() + T
    while not (client.statuses and client.statuses[-1]["state"] == "ready"):  # the model, not the language server
        assert asyncio.get_running_loop().time() < deadline, "the model never became ready"
        await asyncio.sleep(0.05)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "shapes.py").write_text(SHAPES)
    main = tmp_path / "main.py"
    main.write_text(MAIN)
    uri = main.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=MAIN)))
    lines = MAIN.split("\n")
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(len(lines) - 1, len(lines[-1])))
    result = await asyncio.wait_for(client.text_document_inline_completion_async(params), T)
    items = [] if result is None else list(getattr(result, "items", result))
    assert items and items[0].insert_text, result
    name = re.match(r"[A-Za-z_]\w*", items[0].insert_text)
    assert name is not None and name.group() in VALID, items[0].insert_text
