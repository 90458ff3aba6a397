"""Cross-file chunks -> the prompt's repository block, within a token budget, per model family.

What it is: ``CrossFile(preset, tokenizer, nll).build(chunks, mode, budget, ...)`` returns the
token ids that go before the current file in the prompt (``codedec.context.fim.build_prompt``
puts them first), never more than ``budget``:

* modes (``CONTEXT_MODES``): ``none`` (no block), ``truncate`` (the chunks in priority order
  until the budget, the last one cut to whole lines: what products do today), ``longcodezip``
  (``codedec.context.longcodezip``: rank functions by how much they help the model predict the
  code at the cursor, prune inside them), ``coarse`` (LongCodeZip's function-level stage only);
* layout from the preset's ``repo`` entry: the model's repository tokens
  (``<|repo_name|>name\\n<|file_sep|>path\\ncode...<|file_sep|>current path\\n`` for Qwen2.5-Coder,
  ``<repo_name>``/``<file_sep>`` for StarCoder2), else path comments as RepoBench lays them out
  (``# Repo Name: name`` then ``# Path: path`` + code + blank line per chunk, then
  ``# Path: current path``). Adjacent chunks of one file share one path header.

The block keeps the chunks' order, so while the user types in one file it stays the same and the
KV cache of the previous request stays a prefix of the next prompt.
What it is not: gathering (``codedec.context.repository``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from codedec.context.fim import encode_marker, encode_text
from codedec.context.longcodezip import LongCodeZip, NllFn, ZipConfig, query_text
from codedec.context.repository import ContextChunk

CONTEXT_MODES = ("none", "truncate", "longcodezip", "coarse")
DEFAULT_CONTEXT_SHARE = 0.25  # of the prompt budget, when no context budget is set


@dataclass
class CrossFileBlock:
    """The block's ids and what went into it: ``chunks`` as shown (possibly cut), ``stats``
    (mode, tokens before/after, compression ms, units scored/cached)."""

    ids: list[int]
    chunks: list[ContextChunk]
    stats: dict = field(default_factory=dict)


def check_mode(mode: str) -> str:
    if mode not in CONTEXT_MODES:
        raise ValueError(f"context must be one of {', '.join(CONTEXT_MODES)}; got {mode!r}")
    return mode


class CrossFile:
    """Builds repository blocks for one model (``nll``: ``codedec.forward.token_nll`` bound to it;
    None when there is no model to score with — LongCodeZip then falls back to truncation)."""

    def __init__(self, preset: dict, tokenizer, nll: NllFn | None = None) -> None:
        self.preset, self.tokenizer = preset, tokenizer
        self._zips: dict[bool, LongCodeZip] = {}
        self._nll = nll

    def _encode(self, text: str) -> list[int]:
        return encode_text(self.tokenizer, text)

    def _encode_lines(self, lines: list[str]) -> list[list[int]]:
        return self.tokenizer(lines, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _zip(self, fine: bool) -> LongCodeZip | None:
        if self._nll is None:
            return None
        z = self._zips.get(fine)
        if z is None:
            z = self._zips[fine] = LongCodeZip(self._nll, self._encode_lines, ZipConfig(fine=fine))
        return z

    # ---- layout

    def render(self, chunks: Sequence[ContextChunk], current_path: str, repo_name: str = "") -> list[int]:
        """The block's ids for ``chunks`` (module docstring); [] for no chunks."""
        if not chunks:
            return []
        repo = self.preset.get("repo")
        if repo:
            tok = self.tokenizer
            ids = encode_marker(tok, repo["repo_name"]) + self._encode(f"{repo_name}\n") if repo_name else []
            for c in _merged(chunks):
                ids += encode_marker(tok, repo["file_sep"]) + self._encode(f"{c.path}\n{_line_ended(c.text)}")
            return ids + encode_marker(tok, repo["file_sep"]) + self._encode(f"{current_path}\n")
        parts = [f"# Repo Name: {repo_name}\n"] if repo_name else []
        parts += [f"# Path: {c.path}\n{_line_ended(c.text)}\n" for c in _merged(chunks)]
        return self._encode("".join(parts) + f"# Path: {current_path}\n")

    # ---- fitting

    def build(self, chunks: Sequence[ContextChunk], mode: str, budget: int, *, prefix: str = "",
              current_path: str = "", repo_name: str = "", deadline: float | None = None) -> CrossFileBlock:
        """The block for ``chunks`` under ``budget`` tokens with ``mode`` (module docstring);
        ``prefix``: the text before the cursor (LongCodeZip's query); ``deadline``
        (``perf_counter`` time): LongCodeZip scores what it can until then, the rest keeps the
        chunks' order and is scored by the next requests (``LongCodeZip.compress``)."""
        check_mode(mode)
        if mode == "none" or not chunks or budget <= 0:
            return CrossFileBlock([], [], {"mode": mode})
        t0 = time.perf_counter()
        stats: dict = {"mode": mode, "chunks_in": len(chunks)}
        zipper = self._zip(mode == "longcodezip") if mode in ("longcodezip", "coarse") else None
        overhead = len(self.render([ContextChunk("", "", "given")], current_path, repo_name))  # an empty chunk's block
        if zipper is not None:
            query = query_text(prefix, zipper.config.query_lines)
            z = zipper.compress(chunks, query, max(0, budget - overhead), deadline)
            headers = self._header_cost(z.chunks)
            if headers:  # again with room for the kept files' headers (the scores are cached now)
                first = z
                z = zipper.compress(chunks, query, max(0, budget - overhead - headers), deadline)
                z.ms, z.scored, z.cached = z.ms + first.ms, first.scored + z.scored, first.cached
                z.unscored = min(first.unscored, z.unscored)
            kept = z.chunks
            stats.update(tokens_in=z.tokens_in, zip_ms=round(z.ms, 3), units=z.units, scored=z.scored,
                         cached=z.cached, **({"unscored": z.unscored} if z.unscored else {}))
        else:
            kept = list(chunks)
        ids, kept = self._truncate(kept, budget, overhead, current_path, repo_name)
        stats.update(chunks_out=len(kept), tokens_out=len(ids), ms=round((time.perf_counter() - t0) * 1000.0, 3))
        return CrossFileBlock(ids, kept, stats)

    def _header_cost(self, chunks: Sequence[ContextChunk]) -> int:
        """Tokens the path headers of ``chunks`` take (adjacent chunks of one file share one)."""
        return sum(len(self._encode(f"# Path: {c.path}\n\n")) for c in _merged(chunks))

    def _truncate(self, chunks: list[ContextChunk], budget: int, overhead: int, current_path: str,
                  repo_name: str) -> tuple[list[int], list[ContextChunk]]:
        """The longest head of ``chunks`` (whole chunks, then whole lines of the next) whose
        block fits in ``budget`` tokens (``overhead``: the block of one empty chunk). Costs are
        summed per chunk (each tokenized once), then the joined block is verified and trimmed
        line by line if the join tokenizes longer."""
        used = overhead - len(self._encode("# Path: \n\n"))
        kept: list[ContextChunk] = []
        for chunk in chunks:
            header = len(self._encode(f"# Path: {chunk.path}\n"))
            lines = _line_ended(chunk.text).splitlines(keepends=True)
            costs = [len(ids) for ids in self._encode_lines(lines)] if lines else []
            whole = header + sum(costs) + 1
            if used + whole <= budget:
                kept.append(chunk)
                used += whole
                continue
            room, n = budget - used - header - 1, 0
            while n < len(lines) and costs[n] <= room:
                room -= costs[n]
                n += 1
            if n > 0:
                kept.append(replace(chunk, text="".join(lines[:n])))
            break
        ids = self.render(kept, current_path, repo_name)
        while len(ids) > budget and kept:  # the join tokenized longer than the sum: trim the tail
            lines = kept[-1].text.splitlines(keepends=True)[:-1]
            kept[-1:] = [replace(kept[-1], text="".join(lines))] if lines else []
            ids = self.render(kept, current_path, repo_name)
        return ids, kept


def _merged(chunks: Sequence[ContextChunk]) -> list[ContextChunk]:
    """Adjacent chunks of the same file as one (one path header for them)."""
    out: list[ContextChunk] = []
    for c in chunks:
        if out and out[-1].path == c.path:
            out[-1] = replace(out[-1], text=_line_ended(out[-1].text) + c.text)
        else:
            out.append(c)
    return out


def _line_ended(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"
