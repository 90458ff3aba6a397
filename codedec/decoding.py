"""Decoding components selectable by name (``--decoding a,b`` in the CLI, eval and server).

What it is: the one registry mapping a component name to a factory, so every frontend accepts the
same names and rejects unknown ones with the same message. An empty list is plain greedy/sampled
decoding. Token healing is not listed here: it is a property of the prompt (on by default,
``--no-heal`` turns it off).

Order: processors run in the order of ``PROCESSOR_ORDER`` whatever order the user wrote them in —
soft penalties first, hard masks after (DESIGN §1) — so ``a,b`` and ``b,a`` decode identically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from codedec.processors import BannedTokens, LogitsProcessor, MinNewTokens
from codedec.vocab import Vocab


@dataclass(frozen=True)
class ComponentContext:
    """What a component factory may use (only what it needs is read)."""

    vocab: Vocab
    stop_ids: tuple[int, ...]


Factory = Callable[[ComponentContext], LogitsProcessor]

# name -> (factory, one-line description); ordered: soft penalties, then hard masks.
PROCESSORS: dict[str, tuple[Factory, str]] = {
    "min-tokens": (
        lambda ctx: MinNewTokens(1, ctx.stop_ids),
        "never end a completion before its first token (an immediate EOS shows nothing)",
    ),
    "no-fences": (
        lambda ctx: BannedTokens.containing(ctx.vocab, b"```"),
        "ban tokens containing a Markdown code fence (instruct models escape into prose)",
    ),
}
PROCESSOR_ORDER = tuple(PROCESSORS)


def known_components() -> dict[str, str]:
    """Name -> description of every selectable component."""
    return {name: desc for name, (_, desc) in PROCESSORS.items()}


def parse_decoding(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a,b"`` (or an iterable of names) -> validated, de-duplicated names in registry order.

    Raises ``ValueError`` naming the unknown components and listing the known ones.
    """
    if spec is None:
        return ()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in PROCESSORS]
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in known_components().items())
        raise ValueError(
            f"unknown decoding component(s): {', '.join(unknown)}. Known: {known}. "
            "An empty list means plain decoding."
        )
    return tuple(n for n in PROCESSOR_ORDER if n in names)


def build_processors(names: Sequence[str], ctx: ComponentContext) -> list[LogitsProcessor]:
    """Instantiate the processors for validated ``names`` (see ``parse_decoding``)."""
    return [PROCESSORS[name][0](ctx) for name in parse_decoding(names)]
