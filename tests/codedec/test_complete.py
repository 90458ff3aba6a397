"""``complete()``: text in, streamed text out through the service pipeline — on tiny-random, and
(integration) on SmolLM2."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codedec.complete import complete
from codedec.engine import Engine
from codedec.service import CompletionService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "is_prime.py"


@pytest.fixture()
def service_for():
    made = []

    def make(loaded):
        made.append(CompletionService(Engine(loaded), warmup=None))
        return made[-1]

    yield make
    for svc in made:
        svc.close()


def test_streamed_deltas_add_up_to_the_raw_text(tiny, service_for):
    deltas: list[str] = []
    result = complete(service_for(tiny), "def f(x):\n", "\n", max_tokens=12, on_delta=deltas.append)
    assert "".join(deltas) == result.raw_text
    assert result.prompt_tokens > 0 and 0 < len(result.token_ids) <= 12
    assert result.prompt_mode == "psm" and result.heal_text == "\n"
    assert result.forwards >= 1


def test_second_request_in_the_same_file_reuses_the_cache(tiny, service_for):
    svc = service_for(tiny)
    first = complete(svc, "import os\n\ndef f(x):\n    return x\n", max_tokens=4, doc="a.py")
    second = complete(svc, "import os\n\ndef f(x):\n    return x + 1\n", max_tokens=4, doc="a.py")
    other = complete(svc, "import os\n\ndef f(x):\n    return x + 1\n", max_tokens=4, doc="b.py")
    assert first.reused_tokens == 0 and second.reused_tokens > 5
    assert other.reused_tokens == 0  # another document: another cache


def test_unknown_decoding_is_an_error(tiny, service_for):
    with pytest.raises(ValueError, match="unknown decoding"):
        complete(service_for(tiny), "x = ", decoding="nope")


def test_text_is_post_processed_like_the_editors(tiny, service_for):
    """The one pipeline: the final text is ``finalize``d (here: single-line keeps one line and
    trailing blanks go), the raw text is what the model produced."""
    from codedec.postprocess import finalize

    result = complete(service_for(tiny), "x = 1\ny = ", "", max_tokens=12, single_line=True, heal=False)
    assert result.text == finalize(result.raw_text, "x = 1\ny = ", "", "single")
    assert "\n" not in result.text


@pytest.mark.integration
def test_embedded_model_completes_the_example_sensibly(smollm2, service_for):
    prefix = EXAMPLE.read_text()
    result = complete(service_for(smollm2), prefix, max_tokens=80, time_budget_ms=None)
    assert "return" in result.text
    ast.parse(prefix + result.text)  # a syntactically whole function body
    assert result.text.startswith("    ")  # indented into the function (healing picked the indent)
    # The completion ends with the function (`make demo` used to run on into a second def).
    assert result.finish_reason in ("block_end", "stop") and "\ndef " not in result.raw_text
