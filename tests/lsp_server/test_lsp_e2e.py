"""End to end: pytest-lsp drives the real server process (tiny-random model) as VS Code and Neovim.

One server per client profile (module scope: starting one costs a few seconds). Every await has a
timeout so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_lsp
from lsp_helpers import SERVER_ENV, make_client, server_command
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server.positions import units

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = 20  # seconds: the most any single exchange may take
BASE = {"maxTokens": 16, "timeBudgetMs": 5000, "debounceMs": 0, "languages": [], "lineMode": "auto"}
LONG = {"maxTokens": 3000, "timeBudgetMs": 0}  # ~30 s unless cancelled
SOURCE = "import os\n\n\ndef main():\n    x = 1\n"
PROFILES = {"vscode": "visual-studio-code", "neovim": "neovim"}


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=server_command(), client_factory=make_client, server_env=SERVER_ENV
    ),
    scope="module",
    params=list(PROFILES),
)
async def client(lsp_client: LanguageClient, request, tmp_path_factory):
    telemetry = tmp_path_factory.mktemp("telemetry") / "events.jsonl"
    lsp_client.telemetry = telemetry
    lsp_client.profile = request.param
    lsp_client.init_result = await asyncio.wait_for(
        lsp_client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities(PROFILES[request.param]),
                initialization_options={**BASE, "telemetryPath": str(telemetry)},
            )
        ),
        T,
    )
    yield
    await asyncio.wait_for(lsp_client.shutdown_session(), T)


_docs = iter(range(10_000))


def open_doc(client: LanguageClient, text: str, language: str = "python") -> str:
    uri = f"file:///work/doc{next(_docs)}.py"
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )
    return uri


def end_of(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(len(lines) - 1, len(lines[-1]))


def configure(client: LanguageClient, **settings) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"codedec": {**BASE, **settings}})
    )


async def inline(client: LanguageClient, uri: str, pos: types.Position, msg_id: str | None = None):
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(uri),
        position=pos,
    )
    result = await asyncio.wait_for(
        client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id), T
    )
    return [] if result is None else list(result.items if hasattr(result, "items") else result)


async def until(predicate, what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def events(client: LanguageClient) -> list[dict]:
    if not client.telemetry.exists():
        return []
    return [json.loads(line) for line in client.telemetry.read_text().splitlines()]


async def test_capabilities_and_load_progress(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    sync = caps.text_document_sync
    assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Incremental
    assert client.init_result.server_info.name == "codedec"
    # The model load was reported as work-done progress: begin ... end.
    await until(
        lambda: any(
            r and isinstance(r[-1], types.WorkDoneProgressEnd) for r in client.progress_reports.values()
        ),
        "the end of the load progress",
    )
    (reports,) = [r for r in client.progress_reports.values() if r]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and "tiny-random" in reports[0].message
    assert "ready" in reports[-1].message
    # ... and as codedec/status notifications, for status displays: loading first, ready last.
    await until(lambda: client.statuses and client.statuses[-1]["state"] == "ready", "a ready status")
    assert client.statuses[0]["state"] == "loading" and client.statuses[-1]["model"] == "tiny-random"


async def test_inline_completion_streams_partials(client: LanguageClient):
    uri = open_doc(client, SOURCE)
    client.partials.clear()
    items = await inline(client, uri, end_of(SOURCE), msg_id=f"inline-{client.profile}")
    assert len(items) == 1 and items[0].insert_text
    assert items[0].range.start == end_of(SOURCE) == items[0].range.end
    (args,) = items[0].command.arguments  # the item names its request, for the accept report
    assert items[0].command.command == "codedec.accepted"
    assert args["id"] == f"inline-{client.profile}" and args["uri"] == uri and args["tokens"] >= 1
    mine = [p for p in client.partials if p["id"] == f"inline-{client.profile}"]
    assert mine and all(p["uri"] == uri for p in mine)
    texts = [p["text"] for p in mine]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))  # text so far, growing
    served = [
        e for e in events(client) if e["event"] == "completion" and e["id"] == f"inline-{client.profile}"
    ]
    assert served and served[0]["source"] == "model" and served[0]["first_partial_ms"] is not None


async def test_completion_returns_one_item(client: LanguageClient):
    text = SOURCE + "    valu"
    uri = open_doc(client, text)
    result = await asyncio.wait_for(
        client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri), position=end_of(text))
        ),
        T,
    )
    (item,) = result.items
    assert result.is_incomplete
    # The item replaces the word being typed with word + completion (clients filter on it).
    assert item.text_edit.new_text.startswith("valu") and len(item.text_edit.new_text) > 4
    assert item.text_edit.range.start.character == 4 and item.text_edit.range.end == end_of(text)
    assert item.filter_text == item.text_edit.new_text


async def test_incremental_edits_in_the_negotiated_encoding(client: LanguageClient):
    # Edits after an emoji: 2 UTF-16 units (VS Code), 4 UTF-8 bytes (Neovim's preferred encoding).
    before = 's = "😀"\n' + SOURCE
    after = 's = "😀!"\n' + SOURCE + "    y = x\n"
    col = {"vscode": 6, "neovim": 8}[client.profile]  # character position right after the emoji
    edited = open_doc(client, before)
    lines = before.split("\n")
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=edited, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(0, col), types.Position(0, col)), text="!"
                ),
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(len(lines) - 1, 0), types.Position(len(lines) - 1, 0)),
                    text="    y = x\n",
                ),
            ],
        )
    )
    fresh = open_doc(client, after)
    got = await inline(client, edited, end_of(after))
    want = await inline(client, fresh, end_of(after))
    assert [i.insert_text for i in got] == [i.insert_text for i in want] and want


async def test_lone_cr_and_crlf_line_ends_put_the_cursor_on_the_right_line(client: LanguageClient):
    # LSP counts \r, \r\n and \n as line ends; the model sees \n. A cursor on line 3 of a
    # classic-Mac file must complete what the same cursor in a \n file completes.
    lf = "import os\n\n\ndef main():\n    x = 1\n    return x\n"
    pos = types.Position(3, 11)  # after "def main():"
    want = await inline(client, open_doc(client, lf), pos)
    assert want
    for eol in ("\r", "\r\n"):
        got = await inline(client, open_doc(client, lf.replace("\n", eol)), pos)
        assert [i.insert_text for i in got] == [i.insert_text for i in want], eol
    wrong = await inline(client, open_doc(client, lf), types.Position(6, 0))  # where \n-only lines put it
    assert [i.insert_text for i in wrong] != [i.insert_text for i in want]


def finished_by_itself(client: LanguageClient, msg_id: str) -> bool:
    """A random model may hit EOS early: then the request ended before the cancel/supersede arrived
    and the attempt proves nothing (the test tries another prompt)."""
    served = [e for e in events(client) if e.get("id") == msg_id]
    return bool(served) and served[0]["finish_reason"] != "cancelled"


async def test_cancel_request_stops_the_engine(client: LanguageClient):
    configure(client, **LONG)
    try:
        for attempt in range(4):
            text = f"# cancel {attempt}\n" + SOURCE  # not completed before: no typed-ahead cache hit
            uri = open_doc(client, text)
            msg_id = f"cancel-{client.profile}-{attempt}"
            task = asyncio.ensure_future(inline(client, uri, end_of(text), msg_id=msg_id))
            await until(lambda: any(p["id"] == msg_id for p in client.partials), "a partial")  # noqa: B023
            t0 = time.monotonic()
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            try:
                await task
            except JsonRpcRequestCancelled:
                break
            assert finished_by_itself(client, msg_id), "the request was neither cancelled nor finished"
        else:
            pytest.fail("every attempt finished before the cancel arrived")
        # The engine is free again at once: a short request is served promptly.
        configure(client)
        other = open_doc(client, "def add(a, b):\n    ")
        assert await inline(client, other, types.Position(1, 4))
        assert time.monotonic() - t0 < 5.0
        n = len([p for p in client.partials if p["id"] == msg_id])
        await asyncio.sleep(0.3)
        assert len([p for p in client.partials if p["id"] == msg_id]) == n  # no more partials
    finally:
        configure(client)


async def test_new_request_supersedes_the_previous_one(client: LanguageClient):
    try:
        for attempt in range(4):
            configure(client, **LONG)
            text = f"# supersede {attempt}\n" + SOURCE
            uri = open_doc(client, text)
            first_id = f"old-{client.profile}-{attempt}"
            first = asyncio.ensure_future(inline(client, uri, end_of(text), msg_id=first_id))
            await until(lambda: any(p["id"] == first_id for p in client.partials), "a first partial")  # noqa: B023
            configure(client)  # short generations again, for the second request
            t0 = time.monotonic()
            second = await inline(client, uri, types.Position(4, 11))  # the same document, another place
            assert second and time.monotonic() - t0 < 5.0
            old = await first
            if not finished_by_itself(client, first_id):
                assert old == []  # superseded: an empty result, not an error
                break
        else:
            pytest.fail("every first request finished before the second arrived")
    finally:
        configure(client)


async def test_debounce_drops_requests_overtaken_while_waiting(client: LanguageClient):
    configure(client, debounceMs=300)
    try:
        text = "# debounce\n" + SOURCE
        uri = open_doc(client, text)
        first_id = f"debounced-{client.profile}"
        first = asyncio.ensure_future(inline(client, uri, end_of(text), msg_id=first_id))
        await asyncio.sleep(0.05)
        second = await inline(client, uri, types.Position(4, 11))
        assert await first == [] and second
        assert not [p for p in client.partials if p["id"] == first_id]  # never reached the engine
    finally:
        configure(client)


async def test_a_superseded_debouncing_request_answers_at_once(client: LanguageClient):
    configure(client, debounceMs=3000)
    try:
        text = "# long debounce\n" + SOURCE
        uri = open_doc(client, text)
        first = asyncio.ensure_future(inline(client, uri, end_of(text)))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(inline(client, uri, types.Position(4, 11)))
        t0 = time.monotonic()
        assert await asyncio.wait_for(first, 1.5) == []  # woken by the newer request, not after 3 s
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text + "\n")]))
        assert await asyncio.wait_for(second, 1.5) == []  # woken by the edit
        assert time.monotonic() - t0 < 2.5
    finally:
        configure(client)


async def test_typed_ahead_is_served_from_the_cache(client: LanguageClient):
    text = "def add(a, b):\n    "
    uri = open_doc(client, text)
    (item,) = await inline(client, uri, types.Position(1, 4))
    shown = item.insert_text
    assert len(shown) >= 2 and "\n" not in shown[:2]
    # The user types the first two characters of the suggestion.
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(1, 4), types.Position(1, 4)), text=shown[:2]
                )
            ],
        )
    )
    msg_id = f"typed-{client.profile}"
    client.partials.clear()
    encoding = {"vscode": "utf-16", "neovim": "utf-8"}[client.profile]
    (again,) = await inline(client, uri, types.Position(1, 4 + units(shown[:2], encoding)), msg_id=msg_id)
    assert again.insert_text == shown[2:]
    assert not [p for p in client.partials if p["id"] == msg_id]  # no model call
    served = [e for e in events(client) if e.get("id") == msg_id]
    assert served and served[0]["source"] == "cache"


async def test_settings_and_language_filter(client: LanguageClient):
    configure(client, languages=["lua"])
    try:
        text = "# filtered\n" + SOURCE
        uri = open_doc(client, text)
        assert await inline(client, uri, end_of(text)) == []
    finally:
        configure(client)
    # A bad value is reported and the previous settings stay.
    n = len(client.log_messages)
    configure(client, maxTokens="many")
    await until(lambda: len(client.log_messages) > n, "a log message")
    assert "maxTokens" in client.log_messages[-1].message
    uri = open_doc(client, SOURCE)
    assert await inline(client, uri, end_of(SOURCE))


async def test_errors_become_empty_results_with_a_log_message(client: LanguageClient):
    n = len(client.log_messages)
    assert await inline(client, "file:///never/opened.py", types.Position(0, 0)) == []
    await until(lambda: len(client.log_messages) > n, "a log message")
    assert "not open" in client.log_messages[-1].message
    # Mid-word: no completion, no error.
    uri = open_doc(client, "x = value\n")
    assert await inline(client, uri, types.Position(0, 6)) == []


async def test_accept_and_reject_are_logged(client: LanguageClient):
    client.protocol.notify("codedec/accept", {"id": "a-1", "acceptedChars": 12})
    client.protocol.notify("codedec/reject", {"id": "r-1"})
    await until(lambda: {"accept", "reject"} <= {e["event"] for e in events(client)}, "telemetry lines")
    (acc,) = [e for e in events(client) if e["event"] == "accept"]
    assert acc["id"] == "a-1" and acc["acceptedChars"] == 12 and acc["ts"] > 0


async def test_a_request_sent_before_did_open_waits_for_it(client: LanguageClient):
    """VS Code's language client, started while the user types, can send the first inline
    request before the didOpen of a document that was already open: the request waits for the
    didOpen (up to OPEN_WAIT_S) instead of answering nothing."""
    await until(lambda: any(s["state"] == "ready" for s in client.statuses), "the model")
    uri = f"file:///work/doc{next(_docs)}.py"
    early = asyncio.ensure_future(inline(client, uri, end_of(SOURCE)))
    await asyncio.sleep(0.3)
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)
        )
    )
    got = await early
    assert got, [m.message for m in client.log_messages][-5:]
