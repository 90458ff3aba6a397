"""Cross-file context through the service, as an editor request gets it."""

from __future__ import annotations

import pytest

from codedec.service import CompletionRequest, ServerSettings

TIMEOUT = 60


@pytest.fixture()
def workspace(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "geometry.py").write_text("def area(w, h):\n    return w * h\n")
    main = tmp_path / "main.py"
    main.write_text("from geometry import area\n\nprint(area(")
    return tmp_path, main


def _request(main, **kw):
    return CompletionRequest.from_settings(ServerSettings(), id=1, doc=f"file://{main}", prefix=main.read_text(),
                                           path=str(main), max_tokens=2, **kw)


def test_editor_requests_carry_repository_context_by_default(service, workspace):
    _, main = workspace
    with_context = service.complete(_request(main), TIMEOUT)
    ctx = with_context.stats["context"]
    assert ctx["mode"] == "truncate" and ctx["chunks_out"] == 1 and ctx["tokens_out"] > 0
    without = service.complete(_request(main, context="none"), TIMEOUT)
    assert "context" not in without.stats
    assert with_context.stats["prompt_tokens"] - without.stats["prompt_tokens"] == ctx["tokens_out"]


def test_unsaved_text_of_an_open_document_is_what_the_model_sees(service, workspace, tiny):
    root, main = workspace
    geometry = root / "geometry.py"
    service.documents.open("file://geometry", "def area(w, h):\n    return w * h * UNSAVED\n", path=str(geometry))
    seen = []
    real = service.engine.generate

    def spy(prompt_ids, *a, **kw):
        seen.append(tiny.tokenizer.decode(prompt_ids))
        return real(prompt_ids, *a, **kw)

    service.engine.generate = spy
    service.complete(_request(main), TIMEOUT)
    assert "UNSAVED" in seen[-1] and "# Path: geometry.py" in seen[-1]


def test_client_supplied_chunks_are_used_instead_of_gathering(service, workspace):
    _, main = workspace
    result = service.complete(_request(main, context_chunks=({"path": "lib/x.py", "text": "X = 1\n"},),
                                        repo_name="demo", current_path="app.py"), TIMEOUT)
    assert result.stats["context"]["chunks_in"] == 1


def test_context_settings_parse_and_reject(workspace):
    s = ServerSettings.from_options({"context": "longcodezip", "contextTokens": 256})
    assert (s.context, s.context_tokens) == ("longcodezip", 256)
    with pytest.raises(ValueError, match="context must be one of"):
        ServerSettings.from_options({"context": "all"})
    with pytest.raises(ValueError, match="context_tokens"):
        ServerSettings.from_options({"contextTokens": -1})
