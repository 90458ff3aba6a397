"""How sure the model was: per-token entropy and probability, and the editor rules built on them.

What it is:

1. ``token_uncertainty(row, token)``: (entropy in nats, probability of ``token``) under
   softmax(``row``) — the processed distribution a strategy chose the token from (strategies pass
   it to ``DecodeState.advance``; each ``engine.Step`` carries its tokens');
2. ``spike_cut(token_bytes, uncertainty, threshold, skip)``: where to cut a multi-line suggestion —
   before the line of the first token after the first line whose entropy reaches ``threshold``
   (show the confident part, whole lines), or None;
3. ``withhold(uncertainty, min_prob)``: whether to show nothing because the first token's
   probability is below ``min_prob``; ``first_line_confidence``: the geometric-mean probability
   of the first line's tokens, the signal of the ``min_line_prob`` rule (withhold below it — at a
   line start the first token is nearly always confident, the first line's tokens are not);
4. ``apply_rules(...)``: both, as the service applies them to a generated text (the final answer,
   each streamed partial, and ``benchmarks/bench_uncertainty.py`` replaying a session offline).

What it is not: a calibration (``codedec.calibrate`` learns the entropy threshold per model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def entropy_of(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dimension of log-probabilities ``logp`` [..., V] -> [...];
    masked (-inf) entries count 0."""
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)


def entropy(logits: torch.Tensor) -> float:
    """Entropy in nats of softmax(``logits`` [V])."""
    return float(entropy_of(torch.log_softmax(logits.float(), dim=-1)))


def token_uncertainty(row: torch.Tensor, token: int) -> tuple[float, float]:
    """(entropy nats, probability of ``token``) of softmax(``row`` [V]); masked (-inf) entries count 0."""
    logp = torch.log_softmax(row.float(), dim=-1)  # [V]
    return float(entropy_of(logp)), float(logp[token].exp())


def spike_cut(token_bytes: Sequence[bytes], uncertainty: Sequence[tuple[float, float]], threshold: float,
              skip: str = "") -> int | None:
    """The number of visible characters to keep, or None to keep everything.

    ``token_bytes``: the generated tokens' bytes; ``skip``: text at the start the editor does not
    show (token healing's re-created text). A token belongs to the line it starts on, or to the
    next line when it starts with a newline (choosing it chooses that the line exists). The first
    token on a line after the first whose entropy >= ``threshold`` cuts the suggestion before that
    line's newline."""
    raw = b"".join(token_bytes)
    newlines = 0
    newlines_before = []  # per token: newlines in the raw text before it (+1 when it opens a line)
    for b in token_bytes:
        newlines_before.append(newlines + (1 if b.startswith(b"\n") else 0))
        newlines += b.count(b"\n")
    hidden = skip.count("\n")
    for (entropy, _prob), line in zip(uncertainty, newlines_before, strict=True):
        if line - hidden >= 1 and not math.isnan(entropy) and entropy >= threshold:
            visible = raw.decode("utf-8", errors="replace")
            visible = visible[len(skip):] if visible.startswith(skip) else visible
            lines = visible.split("\n")
            return len("\n".join(lines[: line - hidden]))
    return None


def first_line_confidence(token_bytes: Sequence[bytes],
                          uncertainty: Sequence[tuple[float, float]]) -> tuple[float, bool] | None:
    """(geometric mean of the probabilities of the tokens on the suggestion's first line, whether
    that line is complete), or None before any token. The first line ends at the first newline
    after some non-blank text (a token that starts with it belongs to the next line; one that
    contains it later ends this one); it is complete once such a newline was generated.
    Tokens of unknown probability (NaN) are left out."""
    logs: list[float] = []
    seen_text = False  # non-blank text generated on the first line so far
    complete = False
    for b, (_entropy, prob) in zip(token_bytes, uncertainty, strict=False):
        if seen_text and b.startswith(b"\n"):  # the next line's token: the first line ended before it
            complete = True
            break
        if not math.isnan(prob):
            logs.append(math.log(max(prob, 1e-12)))
        for k, part in enumerate(b.split(b"\n")):
            if k and seen_text:  # a newline after text: this token ends the first line
                complete = True
                break
            seen_text = seen_text or bool(part.strip())
        if complete:
            break
    if not logs:
        return None
    return math.exp(sum(logs) / len(logs)), complete


def withhold(uncertainty: Sequence[tuple[float, float]], min_prob: float) -> bool:
    """True when the first token's probability is known and below ``min_prob``."""
    if not uncertainty:
        return False
    prob = uncertainty[0][1]
    return not math.isnan(prob) and prob < min_prob


def apply_rules(text: str, token_bytes: Sequence[bytes], uncertainty: Sequence[tuple[float, float]], *,
                cut: float | None, min_prob: float | None, single_line: bool, skip: str = "",
                min_line_prob: float | None = None, final: bool = True) -> tuple[str, str | None]:
    """(how much of the generated ``text`` the editor may show, why less: ``withheld``, ``cut`` or
    None). ``min_prob``: withhold when the first token is less likely (None: off);
    ``min_line_prob``: withhold when the first line's tokens are, on geometric mean
    (``first_line_confidence``; None: off) — while that line is not complete and the text is not
    ``final`` (a streamed partial) nothing is shown yet; ``cut``: end a multi-line suggestion
    before the first line after its first whose first token's entropy reaches it (None: off;
    never for ``single_line``). ``token_bytes``/``uncertainty``: per generated token; ``skip``:
    token healing's re-created text at the start."""
    if min_prob is not None and withhold(uncertainty, min_prob):
        return "", "withheld"
    if min_line_prob is not None:
        line = first_line_confidence(token_bytes, uncertainty)
        if not final and (line is None or not line[1]):
            return "", None  # undecided yet: show nothing until the first line is complete
        if line is not None and line[0] < min_line_prob:
            return "", "withheld"
    if cut is not None and not single_line and len(token_bytes) == len(uncertainty):
        keep = spike_cut(token_bytes, uncertainty, cut, skip)
        if keep is not None and keep < len(text):
            return text[:keep], "cut"
    return text, None
