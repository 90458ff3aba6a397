"""CompletionService: settings parsing, documents, streaming, supersede, cancel, KV reuse, errors."""

from __future__ import annotations

import threading

import pytest

from codedec.engine import Engine
from codedec.service import (
    CompletionRequest,
    CompletionService,
    DocumentStore,
    ServerSettings,
    TextEdit,
)

PREFIX = "def add(a, b):\n    return a + b\n\n\ndef main():\n"
TIMEOUT = 30


def req(id, doc="file:///a.py", prefix=PREFIX, **kw):
    kw.setdefault("max_tokens", 12)
    return CompletionRequest(id=id, doc=doc, prefix=prefix, **kw)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "options, field, want",
    [
        (None, "max_tokens", 64),
        ({"maxTokens": 16}, "max_tokens", 16),
        ({"max_tokens": 16.0}, "max_tokens", 16),
        ({"codedec": {"debounceMs": 75}}, "debounce_ms", 75),
        ({"timeBudgetMs": 0}, "time_budget_ms", None),
        ({"timeBudgetMs": 300}, "time_budget_ms", 300.0),
        ({"decoding": "no-fences,min-tokens"}, "decoding", ("min-tokens", "no-fences")),
        ({"decoding": ["no-fences"]}, "decoding", ("no-fences",)),
        ({"decoding": "grammar,adadec"}, "decoding", ("grammar",)),  # adadec is a strategy ...
        ({"decoding": "grammar,adadec"}, "strategy", "adadec"),  # ... selectable among the components
        ({"decoding": ["adadec"], "strategy": "plain"}, "strategy", "adadec"),  # the CLI's default "plain"
        ({"enabledLanguages": ["python", "lua"]}, "languages", ("python", "lua")),
        ({"languages": "python, rust"}, "languages", ("python", "rust")),
        ({"lineMode": "single"}, "line_mode", "single"),
        ({"model": "tiny-random"}, "model", "tiny-random"),
        ({"telemetryPath": ""}, "telemetry_path", ""),
        ({"unknownKey": 1}, "max_tokens", 64),  # ignored with a warning
    ],
)
def test_settings_from_options(options, field, want):
    assert getattr(ServerSettings.from_options(options), field) == want


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"maxTokens": "12"}, "maxTokens"),
        ({"maxTokens": 0}, "max_tokens must be in 1..8192"),
        ({"maxTokens": 10**9}, "max_tokens must be in"),
        ({"debounceMs": 60_000}, "debounce_ms must be in 0..5000"),
        ({"timeBudgetMs": 10**9}, "time_budget_ms must be in"),
        ({"maxTokens": True}, "maxTokens"),
        ({"lineMode": "paragraph"}, "line_mode"),
        ({"decoding": "bogus"}, "bogus"),
        ({"decoding": "adadec", "strategy": "nonsense"}, "strategy"),
        ({"heal": "yes"}, "heal"),
        ({"debounceMs": -1}, "debounce_ms"),
        ({"languages": [1, 2]}, "languages"),
    ],
)
def test_settings_reject_bad_values(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        ServerSettings.from_options(options)


def test_settings_update_keeps_the_rest():
    base = ServerSettings.from_options({"maxTokens": 8, "languages": ["python"]})
    new = base.updated({"debounceMs": 10})
    assert (new.max_tokens, new.languages, new.debounce_ms) == (8, ("python",), 10)
    assert new.language_enabled("python") and not new.language_enabled("go")
    assert ServerSettings().language_enabled("anything")
    assert new.as_dict()["languages"] == ["python"]


# ---------------------------------------------------------------- documents


def test_documents_apply_edits_in_order():
    store = DocumentStore()
    store.open("u", "hello world", version=1, language="python")
    doc = store.change("u", 2, [TextEdit(0, 5, "goodbye"), TextEdit(7, 7, ",")])
    assert (doc.text, doc.version, doc.language) == ("goodbye, world", 2, "python")
    with pytest.raises(ValueError, match="outside"):
        store.change("u", 3, [TextEdit(5, 99, "")])
    with pytest.raises(ValueError, match="not open"):
        store.change("v", 1, [])
    store.close("u")
    assert store.get("u") is None


# ---------------------------------------------------------------- generation


def test_streams_deltas_and_reuses_the_document_cache(service):
    deltas: list[tuple[str, str]] = []
    first = service.submit(req(1, on_delta=lambda d, t: deltas.append((d, t)))).result(TIMEOUT)
    assert first.finish_reason in ("length", "stop") and first.error is None
    assert "".join(d for d, _ in deltas) == first.text == (deltas[-1][1] if deltas else "")
    assert first.stats["reused_tokens"] == 0 and first.stats["first_text_ms"] is not None
    # The same document, the user typed one more line: the cached prompt is reused.
    second = service.submit(req(2, prefix=PREFIX + "    x = 1\n")).result(TIMEOUT)
    assert second.stats["reused_tokens"] >= first.stats["prompt_tokens"] - 3 > 0
    # Another document gets its own cache.
    other = service.submit(req(3, doc="file:///b.py")).result(TIMEOUT)
    assert other.stats["reused_tokens"] == 0
    assert service.cached_documents() == ["file:///a.py", "file:///b.py"]


def test_same_prompt_same_text_across_documents(service):
    a = service.submit(req(1)).result(TIMEOUT)
    b = service.submit(req(2, doc="file:///b.py")).result(TIMEOUT)
    assert a.text == b.text


def test_cancel_stops_within_one_step(service):
    seen: list[int] = []
    request = req(1, max_tokens=200, time_budget_ms=None)

    def on_delta(delta, text):
        seen.append(len(text))
        request.cancel.set()

    request.on_delta = on_delta
    result = service.submit(request).result(TIMEOUT)
    assert result.cancelled and result.error is None
    assert len(seen) == 1
    assert result.stats["new_tokens"] <= 4  # the first visible text may need a few tokens (healing)


def test_new_request_supersedes_the_previous_one(service):
    later: dict = {}
    first = req(1, max_tokens=200, time_budget_ms=None)

    def on_delta(delta, text):
        if "fut" not in later:  # the user typed: a new request for the same document arrives
            later["fut"] = service.submit(req(2))

    first.on_delta = on_delta
    r1 = service.submit(first).result(TIMEOUT)
    r2 = later["fut"].result(TIMEOUT)
    assert r1.cancelled and r1.stats["new_tokens"] < 200
    assert not r2.cancelled and r2.finish_reason in ("length", "stop")


def test_queued_request_cancelled_before_it_runs(service):
    gate = threading.Event()
    blocker = req(1, doc="file:///block.py", on_delta=lambda d, t: gate.wait(TIMEOUT))
    f1 = service.submit(blocker)
    queued = req(2)
    f2 = service.submit(queued)
    queued.cancel.set()
    gate.set()
    assert f1.result(TIMEOUT).error is None
    r2 = f2.result(TIMEOUT)
    assert r2.cancelled and "new_tokens" not in r2.stats


def test_errors_become_an_empty_result(service):
    bad = req(1, max_tokens=-1)  # SamplingParams rejects it inside the worker
    result = service.submit(bad).result(TIMEOUT)
    assert result.finish_reason == "error" and result.text == "" and "max_new_tokens" in result.error
    # The worker survives.
    assert service.submit(req(2)).result(TIMEOUT).error is None


def test_loader_runs_on_the_worker_and_failures_are_reported(tiny):
    threads: list[str] = []

    def load():
        threads.append(threading.current_thread().name)
        return Engine(tiny)

    svc = CompletionService(loader=load)
    try:
        assert svc.wait_ready(TIMEOUT) and svc.load_error is None
        assert svc.submit(req(1)).result(TIMEOUT).error is None
        assert threads == ["codedec-engine"]
    finally:
        svc.close()

    def fail():
        raise RuntimeError("no such model: nope")

    svc = CompletionService(loader=fail)
    try:
        result = svc.submit(req(1)).result(TIMEOUT)
        assert result.finish_reason == "error" and "nope" in result.error
    finally:
        svc.close()


def test_warmup_runs_before_ready_and_leaves_nothing_behind(tiny, monkeypatch):
    """The warm-up completion runs once, after the load and before ``ready``, with the grammar
    (not the monitor), and its scratch KV cache is dropped."""
    import codedec.processors.grammar as grammar

    built: list[str] = []
    real = grammar.shared_for
    monkeypatch.setattr(grammar, "shared_for", lambda tok, vocab: built.append("grammar") or real(tok, vocab))
    svc = CompletionService(loader=lambda: Engine(tiny), warmup=("grammar", "monitor"))
    try:
        assert svc.wait_ready(TIMEOUT) and svc.load_error is None
        assert built == ["grammar"] and svc.warmup_ms is not None and svc.warmup_ms > 0
        assert svc.cached_documents() == []
        assert svc.submit(req(1)).result(TIMEOUT).error is None
    finally:
        svc.close()
    cold = CompletionService(loader=lambda: Engine(tiny))
    try:
        assert cold.wait_ready(TIMEOUT) and cold.warmup_ms is None
    finally:
        cold.close()


def test_close_resolves_pending_requests(tiny):
    svc = CompletionService(Engine(tiny))
    gate = threading.Event()
    f1 = svc.submit(req(1, doc="a", on_delta=lambda d, t: gate.wait(TIMEOUT), max_tokens=200))
    f2 = svc.submit(req(2, doc="b"))
    threading.Timer(0.2, gate.set).start()
    svc.close()
    assert f1.result(TIMEOUT).cancelled
    assert f2.result(TIMEOUT).cancelled
    assert svc.submit(req(3)).result(TIMEOUT).cancelled


def test_from_settings_takes_the_generation_knobs():
    s = ServerSettings.from_options(
        {"maxTokens": 9, "timeBudgetMs": 100, "decoding": "min-tokens", "heal": False}
    )
    r = CompletionRequest.from_settings(s, id=1, doc="d", prefix="x", single_line=True)
    assert (r.max_tokens, r.time_budget_ms, r.decoding, r.heal, r.single_line) == (
        9,
        100.0,
        ("min-tokens",),
        False,
        True,
    )


def test_text_reading_components_get_the_code_around_the_cursor(tiny, monkeypatch):
    """The service (and only it) builds the processors from the text around the cursor."""
    import codedec.prepare

    seen = {}
    real = codedec.prepare.build_processors

    def recording(names, ctx):
        seen["text"] = ctx.text
        return real(names, ctx)

    monkeypatch.setattr(codedec.prepare, "build_processors", recording)
    svc = CompletionService(Engine(tiny))
    try:
        r = svc.submit(req(1, suffix="\nprint(main())\n", path="/src/a.py")).result(TIMEOUT)
        assert r.error is None
    finally:
        svc.close()
    text = seen["text"]
    assert (text.suffix, text.path) == ("\nprint(main())\n", "/src/a.py")
    assert PREFIX.startswith(text.prefix) and len(text.prefix) >= len(PREFIX) - 8  # minus the healed tail


def test_mid_file_edit_reuses_the_cache_with_pie(service):
    """After an edit above the cursor, the next request re-rotates the cached suffix (PIE) instead
    of re-encoding everything after the edit; ``pie=False`` turns that off."""
    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(10))
    first = service.submit(req(1, prefix=body)).result(TIMEOUT)
    assert first.error is None
    edited = body.replace("return x * 2\n", "return x * 2 + 1\n")
    second = service.submit(req(2, prefix=edited)).result(TIMEOUT)
    assert second.stats["edit_fallback"] is None and second.stats["edit_rotated"] > 20
    assert second.stats["prompt_tokens"] - second.stats["reused_tokens"] < 12
    third = service.submit(req(3, prefix=body, pie=False)).result(TIMEOUT)
    assert third.stats["edit_rotated"] == 0 and third.stats["reused_tokens"] < third.stats["prompt_tokens"] - 20


def test_pie_setting():
    assert ServerSettings().pie is True
    assert ServerSettings.from_options({"pie": False}).pie is False
    with pytest.raises(ValueError, match="pie"):
        ServerSettings.from_options({"pie": "yes"})
