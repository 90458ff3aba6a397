"""The editor's uncertainty rules: cut a multi-line suggestion at its first uncertain line after
the first, withhold one whose first token is unlikely — on scripted logits, and through the service."""

from __future__ import annotations

import math
import types

import pytest
import torch
from transformers import LlamaConfig

from codedec.engine import Engine
from codedec.service import CompletionRequest, CompletionService
from codedec.uncertainty import apply_rules, first_line_confidence, spike_cut, token_uncertainty, withhold

NAN = (math.nan, math.nan)


def test_token_uncertainty():
    h, p = token_uncertainty(torch.tensor([0.0, 0.0, float("-inf"), 0.0]), 1)
    assert h == pytest.approx(math.log(3)) and p == pytest.approx(1 / 3)


def test_spike_cut_keeps_whole_confident_lines():
    toks = [b"a = 1", b"\n", b"b = 2", b"\n", b"c"]
    sure, unsure = (0.1, 0.9), (3.0, 0.1)
    assert spike_cut(toks, [sure, sure, unsure, sure, sure], 2.0) == len("a = 1")
    assert spike_cut(toks, [sure, unsure, sure, sure, sure], 2.0) == len("a = 1")  # "\n" opens line 2
    assert spike_cut(toks, [sure, sure, sure, sure, unsure], 2.0) == len("a = 1\nb = 2")
    assert spike_cut(toks, [unsure, sure, sure, sure, sure], 2.0) is None  # the first line always stays
    assert spike_cut(toks, [sure, sure, NAN, sure, sure], 2.0) is None  # unknown is not a spike
    # token healing re-created a newline the editor does not show: lines count after it
    assert spike_cut([b"\n    x = 1", b"\n", b"    y"], [sure, sure, unsure], 2.0, skip="\n") == len("    x = 1")


def test_withhold():
    assert withhold([(4.0, 0.05), (0.1, 0.9)], 0.2) and not withhold([(0.2, 0.95)], 0.2)
    assert not withhold([NAN], 0.2) and not withhold([], 0.2)


def test_first_line_confidence_and_the_line_rule():
    sure, unsure = (0.1, 0.9), (3.0, 0.1)
    toks = [b"    a", b" = 1", b"\n", b"b"]
    p, complete = first_line_confidence(toks, [sure, unsure, sure, sure])
    assert p == pytest.approx(math.sqrt(0.9 * 0.1)) and complete  # "\n" opens line 2: not counted
    assert first_line_confidence(toks[:2], [sure, unsure]) == (pytest.approx(0.3), False)  # line still open
    assert first_line_confidence([b"x = 1\n", b"y"], [unsure, sure]) == (pytest.approx(0.1), True)
    # a newline before any text does not end the first line
    assert first_line_confidence([b"\n", b"    a", b"\n"], [sure, unsure, sure]) == (pytest.approx(0.3), True)
    assert first_line_confidence([b"a"], [NAN]) is None and first_line_confidence([], []) is None
    text, unc = "    a = 1\nb", [sure, unsure, sure, sure]
    assert apply_rules(text, toks, unc, cut=None, min_prob=None, single_line=False, min_line_prob=0.5) == \
        ("", "withheld")
    assert apply_rules(text, toks, unc, cut=None, min_prob=None, single_line=False, min_line_prob=0.2) == (text, None)
    # a streamed partial whose first line is still open shows nothing yet; the final answer decides
    assert apply_rules("    a = 1", toks[:2], unc[:2], cut=None, min_prob=None, single_line=False,
                       min_line_prob=0.2, final=False) == ("", None)
    assert apply_rules("    a = 1", toks[:2], unc[:2], cut=None, min_prob=None, single_line=False,
                       min_line_prob=0.2) == ("    a = 1", None)


class Unsure(torch.nn.Module):
    """Emits ``script`` after the prompt (its length: the first forward's, a one-chunk prefill);
    token k has logit ``sure[k]`` (the rest 0): 10 is a sure token, 0.5 an unsure one (still the
    argmax, entropy near log V)."""

    def __init__(self, script: list[int], sure: list[float], vocab_size: int, eos: int) -> None:
        super().__init__()
        self.script, self.sure, self.vocab_size, self.eos = script, sure, vocab_size, eos
        self.prompt_len = None
        self.config = LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=1, vocab_size=vocab_size)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids, position_ids, past_key_values, use_cache=True, logits_to_keep=1):
        if self.prompt_len is None:
            self.prompt_len = int(position_ids[0, -1]) + 1
        dummy = torch.zeros(1, 1, input_ids.shape[1], 1)
        past_key_values.update(dummy, dummy.clone(), 0)
        logits = torch.zeros(1, logits_to_keep, self.vocab_size)
        for row, q in enumerate(position_ids[0, -logits_to_keep:].tolist()):
            k = q + 1 - self.prompt_len
            if 0 <= k < len(self.script):
                logits[0, row, self.script[k]] = self.sure[k]
            else:
                logits[0, row, self.eos] = 10.0
        return types.SimpleNamespace(logits=logits)


PREFIX = "def f():\n"
PIECES = [("    a = 1", 10.0), ("\n", 10.0), ("    b", 0.5), (" = 2", 10.0), ("\n", 10.0), ("    c = 3", 10.0)]


def service_for(tiny, pieces):
    tok = tiny.tokenizer
    script, sure = [], []
    for text, logit in pieces:
        ids = tok.encode(text, add_special_tokens=False)
        script += ids
        sure += [logit] * len(ids)
    model = Unsure(script, sure, len(tok), tok.eos_token_id)
    loaded = types.SimpleNamespace(model=model, tokenizer=tok, preset=tiny.preset, name="unsure",
                                   stop_token_ids=tiny.stop_token_ids, source="")
    return CompletionService(Engine(loaded), warmup=None)


def complete(service, **kw):
    result = service.complete(CompletionRequest(id=1, doc=f"d{kw}", prefix=PREFIX, max_tokens=40, heal=False,
                                                pie=False, **kw), timeout=60)
    assert result.error is None, result.error
    return result


def test_the_service_cuts_at_the_uncertain_line(tiny):
    service = service_for(tiny, PIECES)
    try:
        off = complete(service)
        assert "b = 2" in off.text and "c = 3" in off.text
        partials: dict[str, list[str]] = {"off": [], "cut": []}
        off = complete(service, on_delta=lambda _d, text: partials["off"].append(text))
        cut = complete(service, uncertainty_cut=2.0, on_delta=lambda _d, text: partials["cut"].append(text))
        assert cut.text.strip() == "a = 1" and cut.stats["uncertainty_cut_chars"] > 0
        assert cut.raw_text == off.raw_text  # the rule changes what is shown, not what was generated
        # the streamed partials never show what the final answer takes back
        assert any("b = 2" in t for t in partials["off"]) and partials["cut"]
        assert all("b" not in t and cut.raw_text.startswith(t) for t in partials["cut"])
    finally:
        service.close()


def test_the_service_withholds_an_unsure_first_token(tiny):
    service = service_for(tiny, [("    a", 0.5), (" = 1", 10.0)])
    try:
        shown = complete(service)
        assert shown.text.strip() == "a = 1" and shown.stats["first_token_prob"] < 0.05
        streamed: list[str] = []
        held = complete(service, min_first_prob=0.2, on_delta=lambda _d, text: streamed.append(text))
        assert held.text == "" and held.stats["withheld"] is True
        assert streamed == []  # nothing streamed either
        complete(service, min_first_prob=shown.stats["first_token_prob"] / 2,
                 on_delta=lambda _d, text: streamed.append(text))
        assert streamed  # a sure enough first token streams
    finally:
        service.close()


def test_the_service_withholds_an_unsure_first_line(tiny):
    """A sure first token, an unsure rest of the line: ``min_first_prob`` shows it, ``min_line_prob``
    withholds it; with a low enough threshold the partials start once the first line is complete."""
    service = service_for(tiny, [("    a", 10.0), (" = 1", 0.5), ("\n", 10.0), ("    b = 2", 10.0)])
    try:
        off = complete(service)
        line_prob = off.stats["first_line_prob"]
        assert off.stats["first_token_prob"] > 0.9 and 0 < line_prob < 0.5
        assert complete(service, min_first_prob=0.5).text == off.text
        streamed: list[str] = []
        held = complete(service, min_line_prob=min(1.0, line_prob * 1.5), on_delta=lambda _d, t: streamed.append(t))
        assert held.text == "" and held.stats["withheld"] is True and streamed == []
        shown = complete(service, min_line_prob=line_prob / 2, on_delta=lambda _d, t: streamed.append(t))
        assert shown.text == off.text and streamed
        assert all("\n" in t for t in streamed)  # nothing before the first line was complete
    finally:
        service.close()
