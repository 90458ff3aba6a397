"""``CompletionBackend``: what the completion service needs from an engine (DESIGN §1).

The service hands a backend token ids, sampling parameters, a ready processor chain and an
opaque per-document session key, and streams ``Step``s back; it never touches a KV cache. The
in-process ``codedec.engine.Engine`` implements it; a backend over an existing serving engine
(vLLM for teams that serve completions from GPUs) would implement the same methods, with
``processors`` applied as its logits processors and ``session`` mapped onto its prefix cache.

What it is not: a tokenizer abstraction. ``tokenizer``/``vocab`` are the Hugging Face tokenizer and
``codedec.vocab.Vocab`` the prompt assembly and the processors already use.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from codedec.engine import Step
    from codedec.processors import LogitsProcessor, ProcessorChain
    from codedec.sampling import SamplingParams
    from codedec.strategy import Strategy
    from codedec.vocab import Vocab


@runtime_checkable
class CompletionBackend(Protocol):
    """A model that completes token ids (see the module docstring)."""

    name: str
    preset: dict
    tokenizer: Any
    vocab: Vocab
    stop_ids: tuple[int, ...]
    max_sessions: int

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        processors: ProcessorChain | Sequence[LogitsProcessor] = (),
        strategy: Strategy | None = None,
        *,
        session: Hashable | None = None,
        cancel: threading.Event | None = None,
        edit_aware: bool = False,
    ) -> Iterator[Step]:
        """Stream the completion; the last ``Step`` has ``finish_reason`` and the metrics."""
        ...

    def sessions(self) -> list[Hashable]:
        """Session keys with cached state, least recently used first."""
        ...

    def drop_session(self, session: Hashable) -> None:
        """Forget a session's cached state (unknown keys are ignored)."""
        ...
