"""``complete()``: text in, streamed text out — on tiny-random, and (integration) on SmolLM2."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codedec.complete import complete
from codedec.engine import Engine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "is_prime.py"


def test_streamed_deltas_add_up_to_the_text(tiny):
    deltas: list[str] = []
    result = complete(Engine(tiny), "def f(x):\n", "\n", max_new_tokens=12, on_delta=deltas.append)
    assert "".join(deltas) == result.text
    assert result.prompt_tokens > 0 and 0 < len(result.token_ids) <= 12
    assert result.prompt_mode == "psm" and result.heal_text == "\n"


def test_second_request_in_the_same_file_reuses_the_cache(tiny):
    engine = Engine(tiny)
    first = complete(engine, "import os\n\ndef f(x):\n    return x\n", max_new_tokens=4)
    second = complete(engine, "import os\n\ndef f(x):\n    return x + 1\n", max_new_tokens=4)
    assert first.reused_tokens == 0 and second.reused_tokens > 5


def test_unknown_decoding_is_an_error(tiny):
    with pytest.raises(ValueError, match="unknown decoding"):
        complete(Engine(tiny), "x = ", decoding="nope")


@pytest.mark.integration
def test_embedded_model_completes_the_example_sensibly(smollm2):
    prefix = EXAMPLE.read_text()
    result = complete(
        Engine(smollm2), prefix, max_new_tokens=80, stop_strings=("\ndef ", "\nclass ", "\nif __name__")
    )
    assert "return" in result.text
    ast.parse(prefix + result.text)  # a syntactically whole function body
    assert result.text.startswith("    ")  # indented into the function (healing picked the indent)
