"""One completion from text, synchronously: ``complete(service, prefix, suffix, ...) -> Completion``.

A convenience over ``CompletionService`` for the CLI (``codedec complete``) and the evaluation
harness: it builds a ``CompletionRequest`` from the same ``ServerSettings`` the servers use and
waits for it, so every frontend completes through the one service pipeline (prompt assembly,
processors, per-document cache and PIE, editor post-processing). ``on_delta`` receives each raw
text delta as it is produced (streaming output, on the service's worker thread).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from codedec.service import CompletionRequest, CompletionService
from codedec.settings import ServerSettings

_ids = itertools.count(1)


@dataclass
class Completion:
    """``text`` is what an editor would show (post-processed); ``raw_text`` as generated.
    ``forwards``: model forward calls (``len(token_ids) / forwards`` = tokens per forward)."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    reused_tokens: int
    ttft_ms: float
    ms_per_token: float
    total_ms: float
    finish_reason: str
    forwards: int = 0
    heal_text: str = ""
    prompt_mode: str = "prefix"
    raw_text: str = ""
    stats: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "stats"}
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def complete(
    service: CompletionService,
    prefix: str,
    suffix: str = "",
    *,
    settings: ServerSettings | None = None,
    single_line: bool = False,
    stop_strings: Sequence[str] = (),
    doc: str = "complete",
    path: str | None = None,
    cancel: threading.Event | None = None,
    on_delta: Callable[[str], None] | None = None,
    **overrides: Any,
) -> Completion:
    """Complete the text between ``prefix`` and ``suffix`` through ``service``.

    ``settings`` gives the knobs (default ``ServerSettings()``); ``overrides`` set request fields
    directly (``max_tokens``, ``decoding``, ``temperature``, ``seed``, ``postprocess``...). ``doc``
    keys the KV cache (requests with the same key reuse each other's prompt). Raises
    ``ValueError`` for bad parameters or unknown decoding components (an error result).
    """
    request = CompletionRequest.from_settings(
        settings or ServerSettings(), id=next(_ids), doc=doc, prefix=prefix, suffix=suffix,
        single_line=single_line, stop_strings=tuple(stop_strings), path=path,
        on_delta=(lambda delta, _text: on_delta(delta)) if on_delta is not None else None, **overrides,
    )
    if cancel is not None:
        request.cancel = cancel
    result = service.complete(request)
    if result.error is not None:
        raise ValueError(result.error)
    s = result.stats
    return Completion(
        text=result.text,
        token_ids=result.token_ids,
        prompt_tokens=s.get("prompt_tokens", 0),
        reused_tokens=s.get("reused_tokens", 0),
        ttft_ms=s.get("ttft_ms", 0.0),
        ms_per_token=s.get("ms_per_token", 0.0),
        total_ms=s.get("total_ms", 0.0),
        finish_reason=result.finish_reason,
        forwards=s.get("forwards", 0),
        heal_text=s.get("heal_text", ""),
        prompt_mode=s.get("prompt_mode", "prefix"),
        raw_text=result.raw_text,
        stats=s,
    )
