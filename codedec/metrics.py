"""Per-request timing and counts, reported in the step stream and by ``--json``.

Terms: *prompt tokens* = ids of the prompt; *reused* = of those, already in the KV cache (not
re-encoded); *TTFT* = request start to the first generated token being known; *ms per token* =
decode time after the first token divided by the tokens decoded after it; *forwards* = model
forward calls for the request (prefill chunks and PIE's edited span included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class RequestMetrics:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    new_tokens: int = 0
    total_ms: float = 0.0
    # Edit-aware reuse (PIE), when asked for: tokens encoded for the edited span, cached tokens
    # whose keys were re-rotated, and why PIE fell back to plain prefix reuse (None = it did not).
    edit_encoded: int = 0
    edit_rotated: int = 0
    edit_fallback: str | None = None
    # Model forward calls for this request (prefill chunks and edits included) and the strategy
    # that chose the tokens: new_tokens / forwards is the tokens per forward.
    forwards: int = 0
    strategy: str = "plain"

    @property
    def encoded_tokens(self) -> int:
        """Prompt tokens that had to go through the model (the edited span included)."""
        return self.prompt_tokens - self.reused_tokens

    @property
    def ms_per_token(self) -> float:
        if self.new_tokens <= 1:
            return 0.0
        return (self.total_ms - self.ttft_ms) / (self.new_tokens - 1)

    @property
    def tokens_per_s(self) -> float:
        return 1000.0 / self.ms_per_token if self.ms_per_token > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(ms_per_token=self.ms_per_token, tokens_per_s=self.tokens_per_s)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95)) -> dict[str, float]:
    """``{"p50": .., "p95": ..}`` of ``values`` (NaN for an empty sequence)."""
    if len(values) == 0:
        return {f"p{int(q)}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=float)
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}
