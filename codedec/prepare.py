"""Text around a cursor -> what the engine runs: prompt ids, sampling parameters, processor chain.

What it is: the only place where editor text becomes engine input (DESIGN §1: the engine speaks
token ids). ``prepare`` (1) assembles the prompt (``context.fim``: budget, FIM layout, token
healing), (2) turns the knobs into ``SamplingParams`` — single-line mode, or for a multi-line
completion the indentation below which it has left the cursor's block (``heuristics.block_floor``),
the healed text to skip — and (3) builds the processor chain from the decoding component names
with the text around the cursor (grammar, monitor and rpg read it, through one shared
``TextView`` lexer that the chain moves), token healing first.

What it is not: the request queue (``codedec.service``) or the post-processing of the text
(``codedec.postprocess``).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codedec.context.crossfile import DEFAULT_CONTEXT_SHARE, CrossFile, CrossFileBlock, check_mode
from codedec.context.fim import build_prompt
from codedec.decoding import TEXT_READERS, ComponentContext, TextContext, build_processors, parse_decoding
from codedec.forward import token_nll
from codedec.heuristics import block_floor
from codedec.processors import HealingProcessor, ProcessorChain
from codedec.processors.cursor import analyse
from codedec.processors.textview import TextView
from codedec.sampling import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Engine input for one completion. ``heal_text``: the prompt's backed-up tail (the completion
    starts by re-creating it; ``params.skip_text``); ``prompt_mode``: ``psm``/``spm``/``prefix``."""

    prompt_ids: list[int]
    params: SamplingParams
    chain: ProcessorChain
    heal_text: str
    prompt_mode: str
    context: dict | None = None  # the repository block's stats (None: no block)


def text_context(heal_text: str, prefix: str, suffix: str, path: str | None, params: SamplingParams) -> TextContext:
    """The code around the cursor as decoding components see it: the prefix without the healed
    tail (generation re-creates it), the suffix, the file's path and the generation's limits."""
    before = prefix[: len(prefix) - len(heal_text)] if heal_text and prefix.endswith(heal_text) else prefix
    return TextContext(prefix=before, suffix=suffix, path=path, single_line=params.single_line,
                       max_new_tokens=params.max_new_tokens)


def prepare(
    engine: Any,
    prefix: str,
    suffix: str = "",
    *,
    max_tokens: int = 64,
    single_line: bool = False,
    block_end: bool = True,
    stop_strings: Sequence[str] = (),
    decoding: Sequence[str] | str = (),
    heal: bool = True,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    time_budget_ms: float | None = None,
    max_prompt_tokens: int | None = None,
    path: str | None = None,
    context: str = "none",
    context_chunks: Sequence[Any] = (),
    context_tokens: int | None = None,
    current_path: str = "",
    repo_name: str = "",
) -> Prepared:
    """Build the engine input for the cursor between ``prefix`` and ``suffix`` (module docstring).

    ``engine`` provides ``preset``, ``tokenizer``, ``vocab`` and ``stop_ids``
    (``codedec.backend.CompletionBackend``). ``block_end`` (multi-line only): end the completion
    where the cursor's block ends. ``context_chunks`` (``codedec.context.repository.ContextChunk``)
    are fitted to ``context_tokens`` (default: a quarter of the prompt budget) by ``context``
    (``codedec.context.crossfile``) and put before the file, shown as ``current_path``. Raises
    ``ValueError`` for bad knobs or unknown components.
    """
    names = parse_decoding(decoding)
    zip_deadline = None if time_budget_ms is None else time.perf_counter() + ZIP_SHARE * time_budget_ms / 1000.0
    block = cross_file(engine, context, context_chunks, context_tokens, max_prompt_tokens, prefix,
                       current_path, repo_name, zip_deadline)
    prompt = build_prompt(engine.preset, engine.tokenizer, prefix, suffix, max_tokens=max_prompt_tokens, heal=heal,
                          context_ids=block.ids)
    floor = block_floor(prefix) if block_end and not single_line else 0
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_strings=tuple(stop_strings),
        single_line=single_line,
        max_time_ms=time_budget_ms,
        skip_text=prompt.heal_text,
        block_indent=floor or None,
    )
    text = text_context(prompt.heal_text, prefix, suffix, path, params)
    cursor, views = None, []
    if any(n in TEXT_READERS for n in names):  # one lexer over the region + generation for all of them
        try:
            cursor = analyse(text.prefix, text.suffix)
            views.append(TextView(engine.vocab, cursor.region))
        except Exception:  # noqa: BLE001 - the components then analyse (and fail) on their own
            log.debug("cursor analysis failed; components use their own lexers", exc_info=True)
    context = ComponentContext(engine.vocab, tuple(engine.stop_ids), text, engine.tokenizer,
                               view=views[0] if views else None, cursor=cursor)
    processors = build_processors(names, context)
    deadline = None if time_budget_ms is None else time.monotonic() + time_budget_ms / 1000.0
    for proc in processors:  # queries that can run while the prompt is prefilled (the monitor's at the cursor)
        if hasattr(proc, "prefetch"):
            proc.prefetch(prompt.heal_text, deadline)
    chain = healing_chain(engine.vocab, prompt.heal_text, processors, views)
    return Prepared(prompt.ids, params, chain, prompt.heal_text, prompt.mode, block.stats if block.chunks else None)


ZIP_SHARE = 0.25  # of a request's time budget that LongCodeZip may spend scoring (the rest: next requests)
_CROSS_FILE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> CrossFile


def cross_file(engine: Any, mode: str, chunks: Sequence[Any], budget: int | None, max_prompt_tokens: int | None,
               prefix: str, current_path: str, repo_name: str, deadline: float | None = None) -> CrossFileBlock:
    """The repository block for the prompt (``codedec.context.crossfile``), with the engine's
    model scoring for LongCodeZip (one ``CrossFile`` per engine: its score cache lives there) until
    ``deadline``."""
    check_mode(mode)
    if mode == "none" or not chunks:
        return CrossFileBlock([], [], {"mode": mode})
    prompt_budget = max_prompt_tokens or int(engine.preset.get("context_tokens", 2048))
    if budget is None:
        budget = int(prompt_budget * DEFAULT_CONTEXT_SHARE)
    budget = min(budget, prompt_budget - 64)  # the file itself always keeps room
    builder = _CROSS_FILE.get(engine)
    if builder is None:
        model = getattr(engine, "model", None)
        nll = functools.partial(token_nll, model) if model is not None else None
        builder = _CROSS_FILE[engine] = CrossFile(engine.preset, engine.tokenizer, nll)
    return builder.build(chunks, mode, budget, prefix=prefix, current_path=current_path, repo_name=repo_name,
                         deadline=deadline)


def healing_chain(vocab, heal_text: str, processors: Sequence, views: Sequence = ()) -> ProcessorChain:
    """``processors`` behind token healing for ``heal_text`` (first: when masks disagree the chain
    drops a later one, never healing); pair it with ``SamplingParams(skip_text=heal_text)``."""
    head = [HealingProcessor(vocab, heal_text.encode("utf-8"))] if heal_text else []
    return ProcessorChain(head + list(processors), views)
