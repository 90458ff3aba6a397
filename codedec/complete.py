"""One completion from text: prefix/suffix -> prompt -> engine -> ``Completion``.

The shared path of the CLI (``codedec complete``), the evaluation harness and the server: it turns
text around a cursor into a prompt (``context.fim``), runs ``Engine.generate`` and collects the
streamed steps. ``on_delta`` receives each text delta as it is produced (streaming output).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codedec.context.fim import build_prompt
from codedec.decoding import TextContext, parse_decoding
from codedec.engine import Engine
from codedec.sampling import SamplingParams


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    reused_tokens: int
    ttft_ms: float
    ms_per_token: float
    total_ms: float
    finish_reason: str
    heal_text: str = ""
    prompt_mode: str = "prefix"

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def text_context(
    heal_text: str, prefix: str, suffix: str, path: str | None, params: SamplingParams
) -> TextContext:
    """The code around the cursor as decoding components see it: the prefix without the healed
    tail (generation re-creates it), the suffix, the file's path and the generation's limits."""
    before = prefix[: len(prefix) - len(heal_text)] if heal_text and prefix.endswith(heal_text) else prefix
    return TextContext(
        prefix=before,
        suffix=suffix,
        path=path,
        single_line=params.single_line,
        max_new_tokens=params.max_new_tokens,
    )


def complete(
    engine: Engine,
    prefix: str,
    suffix: str = "",
    *,
    max_new_tokens: int = 128,
    single_line: bool = False,
    stop_strings: Sequence[str] = (),
    decoding: Sequence[str] | str = (),
    heal: bool = True,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_time_ms: float | None = None,
    max_prompt_tokens: int | None = None,
    cancel: threading.Event | None = None,
    on_delta: Callable[[str], None] | None = None,
    path: str | None = None,
) -> Completion:
    """Complete the text between ``prefix`` and ``suffix`` with ``engine``'s model.

    ``path`` names the file (decoding components that ask a language server use it).

    Raises ``ValueError`` for bad parameters or unknown decoding components.
    """
    names = parse_decoding(decoding)
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_strings=tuple(stop_strings),
        single_line=single_line,
        max_time_ms=max_time_ms,
    )
    prompt = build_prompt(
        engine.loaded.preset, engine.tokenizer, prefix, suffix, max_tokens=max_prompt_tokens, heal=heal
    )
    parts: list[str] = []
    tokens: list[int] = []
    last = None
    text = text_context(prompt.heal_text, prefix, suffix, path, params)
    for step in engine.generate(
        prompt.ids, params, decoding=names, heal_text=prompt.heal_text, cancel=cancel, text_context=text
    ):
        tokens.extend(step.token_ids)
        if step.text:
            parts.append(step.text)
            if on_delta is not None:
                on_delta(step.text)
        last = step
    m = last.metrics
    return Completion(
        text="".join(parts),
        token_ids=tokens,
        prompt_tokens=m.prompt_tokens,
        reused_tokens=m.reused_tokens,
        ttft_ms=m.ttft_ms,
        ms_per_token=m.ms_per_token,
        total_ms=m.total_ms,
        finish_reason=last.finish_reason,
        heal_text=prompt.heal_text,
        prompt_mode=prompt.mode,
    )
