"""Choosing the next token from (already processed) logits: greedy, or temperature / top-k / top-p
sampling with an explicit, seeded ``torch.Generator``.

What it is not: logits processing. Constraints and penalties (grammar, monitors, RPG, token
healing) run before this, as ``codedec.processors``; here a row of ``-inf`` stays impossible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one completion is generated (the per-request knobs; the model and cache are the engine's).

    ``temperature == 0`` means greedy. ``stop_token_ids`` add to the model's own stop ids.
    ``single_line`` ends the completion at its first newline. ``max_time_ms`` is a wall-clock budget
    measured from the start of the request (like llama.vim's ``t_max_predict_ms``).
    ``skip_text`` is text the generation first re-creates (token healing backs the prompt up by
    it): it is not part of the completion, and stop strings and single-line mode apply after it.
    ``block_indent``: a multi-line completion ends before its first later line indented less than
    this many columns (the cursor's block ended; ``codedec.stopping``); None = off.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    single_line: bool = False
    max_time_ms: float | None = None
    skip_text: str = ""
    block_indent: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_time_ms is not None and self.max_time_ms <= 0:
            raise ValueError(f"max_time_ms must be > 0, got {self.max_time_ms}")
        if any(not s for s in self.stop_strings):
            raise ValueError(f"stop strings must be non-empty, got {self.stop_strings!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Rng:
    """A seeded ``torch.Generator`` with the component life cycle (DESIGN §1).

    ``torch`` is the generator handed to sampling. ``mark()`` records its state once per accepted
    token (the decode state calls it), so ``rollback(n)`` puts it back where it was before the
    last n tokens were drawn and ``fork()`` gives an independent copy: a rejected draft or a
    lookahead branch leaves the random stream exactly as if it had never been drawn from.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = device
        self.torch = torch.Generator(device=device)
        self.torch.manual_seed(seed)
        self._marks: list[torch.Tensor] = []

    def mark(self, n: int = 1) -> None:
        """Record the current state for each of ``n`` tokens just accepted (after their draws)."""
        state = self.torch.get_state()
        self._marks.extend([state] * n)

    def rollback(self, n: int) -> None:
        if not 0 <= n <= len(self._marks):
            raise ValueError(f"rollback({n}) after {len(self._marks)} marks")
        if n == 0:
            return
        del self._marks[len(self._marks) - n :]
        if self._marks:
            self.torch.set_state(self._marks[-1])
        else:
            self.torch.manual_seed(self.seed)

    def fork(self) -> Rng:
        other = Rng.__new__(Rng)
        other.seed, other.device = self.seed, self.device
        other.torch = torch.Generator(device=self.device)
        other.torch.set_state(self.torch.get_state())
        other._marks = list(self._marks)
        return other

    def reset(self) -> None:
        self.torch.manual_seed(self.seed)
        self._marks = []


def make_generator(params: SamplingParams, device: torch.device | str = "cpu") -> Rng | None:
    """A generator seeded from ``params.seed`` (None for greedy: nothing random happens)."""
    if params.greedy:
        return None
    return Rng(params.seed if params.seed is not None else torch.seed(), device)


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on ``logits`` [P, V]; returns new logits [P, V]
    where filtered entries are ``-inf``. The most likely token always survives."""
    x = logits.float() / params.temperature  # [P, V]
    vocab = x.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(x, params.top_k, dim=-1).values[..., -1:]  # [P, 1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)  # [P, V]
        probs = torch.softmax(sorted_x, dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p.
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


def sample(logits: torch.Tensor, params: SamplingParams, generator: Rng | torch.Generator | None) -> torch.Tensor:
    """One token id per row of ``logits`` [P, V] -> [P] (int64).

    Greedy takes the argmax (ties go to the lowest id, as ``torch.argmax`` and HF ``generate`` do).
    A row that is all ``-inf`` is a processor bug and raises ``ValueError``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [P, V], got shape {tuple(logits.shape)}")
    if bool(torch.isneginf(logits).all(dim=-1).any()):
        raise ValueError("every token of a row was masked out: no token can be generated")
    if params.greedy:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(filter_logits(logits, params), dim=-1)  # [P, V]
    if isinstance(generator, Rng):
        generator = generator.torch
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
