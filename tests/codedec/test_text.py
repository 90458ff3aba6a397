"""Text from editors: lone surrogates become U+FFFD, LSP line ends become \\n for the model."""

from __future__ import annotations

import logging

import pytest

from codedec.service import CompletionRequest, DocumentStore, TextEdit
from codedec.text import for_model, lines_normalized, replace_surrogates


def test_replace_surrogates_one_for_one():
    assert replace_surrogates("plain é 😀") == ("plain é 😀", 0)
    text, n = replace_surrogates("a\ud800b\udfffc")
    assert (text, n) == ("a\ufffdb\ufffdc", 2) and len(text) == 5


def test_lines_normalized():
    assert lines_normalized("a\r\nb\rc\nd") == "a\nb\nc\nd"
    assert lines_normalized("\r\r\n") == "\n\n"
    assert for_model("x\ud800\r") == "x\ufffd\n"


def test_the_tokenizer_refuses_a_lone_surrogate_so_the_rule_is_needed(tiny):
    with pytest.raises(TypeError):
        tiny.tokenizer.encode("x = '\ud800'")


def test_a_lone_surrogate_in_the_prompt_completes_and_is_reported_once(service, caplog):
    prefix = "s = '\ud83d'\n\ndef main():\n"  # half of an emoji's UTF-16 pair
    with caplog.at_level(logging.WARNING, logger="codedec.service"):
        first = service.complete(CompletionRequest(id=1, doc="d", prefix=prefix, max_tokens=4), timeout=30)
        second = service.complete(CompletionRequest(id=2, doc="d", prefix=prefix, max_tokens=4), timeout=30)
    assert first.error is None and first.finish_reason != "error", first
    assert first.stats["replaced_chars"] == second.stats["replaced_chars"] == 1
    assert len([r for r in caplog.records if "surrogate" in r.getMessage()]) == 1


def test_lone_cr_line_ends_reach_the_model_as_newlines(tiny):
    req = CompletionRequest(id=1, doc="d", prefix="def f():\r    x = 1\r\n    ", suffix="\r")
    assert req.prefix == "def f():\n    x = 1\n    " and req.suffix == "\n"


def test_documents_replace_surrogates_in_place(caplog):
    store = DocumentStore()
    with caplog.at_level(logging.WARNING, logger="codedec.service"):
        doc = store.open("u", "a\ud800b")
        store.change("u", 2, [TextEdit(3, 3, "\udc00")])
    assert doc.text == "a\ufffdb\ufffd"
    assert len([r for r in caplog.records if "surrogate" in r.getMessage()]) == 1
