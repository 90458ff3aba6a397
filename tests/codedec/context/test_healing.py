"""Token healing on the tiny byte-level tokenizer and (integration) on SmolLM2's real one."""

from __future__ import annotations

import pytest

from codedec.context.healing import heal_tail, trailing_run
from codedec.vocab import vocab_for

CASES = [
    # (prompt text, what must be healed: a suffix of the prompt that starts the healed text)
    ("def f(x):\n", "\n"),
    ("def f(x):\n    ", "    "),
    ("    value = compu", "compu"),
    ("if a =", "="),
    ('print("hel', "hel"),
]


def check_case(tokenizer, text, must_end_with):
    ids = tokenizer.encode(text, add_special_tokens=False)
    kept, healed = heal_tail(ids, vocab_for(tokenizer))
    assert healed, f"nothing healed for {text!r}"
    assert healed.endswith(must_end_with) or must_end_with.endswith(healed)
    # What is kept plus what is healed is exactly the original text.
    assert tokenizer.decode(kept) + healed == text
    assert len(kept) >= 1
    return healed


@pytest.mark.parametrize("text,tail", CASES)
def test_heal_tail_tiny(tiny, text, tail):
    check_case(tiny.tokenizer, text, tail)


def test_trailing_run():
    assert trailing_run("a = foo") == 3
    assert trailing_run("x:\n    ") == 5
    assert trailing_run("f(") == 1
    assert trailing_run("") == 0


def test_special_token_at_the_end_is_not_healed(tiny):
    ids = tiny.tokenizer.encode("x = 1", add_special_tokens=False) + [tiny.tokenizer.eos_token_id]
    assert heal_tail(ids, vocab_for(tiny.tokenizer)) == (ids, "")


def test_single_token_prompt_is_not_healed(tiny):
    assert heal_tail([5], vocab_for(tiny.tokenizer)) == ([5], "")


@pytest.mark.integration
@pytest.mark.parametrize("text,tail", CASES)
def test_heal_tail_real_tokenizer(smollm2, text, tail):
    healed = check_case(smollm2.tokenizer, text, tail)
    if text.endswith(":\n"):
        # The model's usual token here is newline+indent: healing must allow it.
        vocab = vocab_for(smollm2.tokenizer)
        allowed = {vocab.token_bytes[i] for i in vocab.ids_compatible_with(healed.encode())}
        assert b"\n   " in allowed
