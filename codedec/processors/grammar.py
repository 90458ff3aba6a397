"""The ``grammar`` processor: syntax-valid, suffix-consistent Python completions.

What it is: a hard mask that keeps ``prefix + completion`` a prefix of a Python program and lets
the completion end only where it can run into the suffix. Per request:

1. ``cursor.analyse`` finds the syntactic state at the cursor (tree-sitter restart point, the
   current logical line, open brackets, indentation) and the suffix's first logical line;
2. an llguidance matcher for ``python_grammar`` (compiled once per tokenizer, deep-copied per
   request) consumes the current logical line up to the cursor — so a completion that starts
   inside ``foo(a, `` or a string continues that construct;
3. the indentation tracker (``indent.IndentTracker``) is fed the region's logical lines.

Per step, the allowed tokens are the AND of: the llguidance bitmask; at the start of a line, the
indentation mask (and, when the suffix goes on indented, no line left of the top-level ``def`` or
``class`` body the cursor is in: an infill does not run on into module-level code); when the suffix closes brackets the
prefix opened, no token that closes them
(the completion stays inside: ``bracket floor``); no line that starts left of the suffix's first
line where the completion could end instead; in single-line mode, no newline inside brackets;
near the end of the token budget, only tokens that close the open string or leave no more open
brackets than tokens to close them (each preference dropped when the grammar allows none of it);
at a line start where the completion can end, when fewer tokens are left than the longest of the
last ``LINE_WINDOW`` lines took, only a stop id (a line cut by the budget is a syntax error: the
completion ends before it instead).
A stop id is allowed only where the completion can join the suffix: a copy of the matcher must
consume the suffix head, and a suffix line after a newline must sit at a valid indentation
(checked only when a stop id is within ``EOS_MARGIN`` of the best logit — elsewhere it has
negligible mass and the check would cost a matcher copy per step).

Never blocks: the processor switches itself off for the request (logging why) when the state is
undecidable — a syntax error before the cursor, a current line the grammar rejects, a library
error — and a step whose combined mask is empty drops our own masks, then everything. An
accepted token the matcher refuses (a draft, another processor's choice) suspends it until a
rollback removes that token.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from codedec.processors.base import check_rows, walk_draft
from codedec.processors.cursor import Cursor, analyse
from codedec.processors.indent import COMMENT, IndentState, IndentTracker, indent_tables
from codedec.processors.masking import as_numpy, mask_row_, writable_copy
from codedec.processors.pylex import OP
from codedec.processors.textview import TextView, adopt
from codedec.vocab import Vocab

log = logging.getLogger(__name__)

EOS_MARGIN = 5.0  # a stop id below best - EOS_MARGIN skips the join check (< 0.7 % of the best)
CLOSE_MARGIN = 3  # budget-aware closing starts when remaining tokens <= open brackets + this
LINE_WINDOW = 4  # the next line is expected to cost as much as the longest of this many last lines


class Shared:
    """Per-tokenizer state: the llguidance tokenizer, the compiled grammar and token tables."""

    def __init__(self, tokenizer, vocab: Vocab) -> None:
        import llguidance
        import llguidance.hf

        from codedec.processors.python_grammar import grammar_json

        self.lltok = llguidance.hf.from_tokenizer(tokenizer)
        self.template = llguidance.LLMatcher(self.lltok, grammar_json(), log_level=0)
        if self.template.is_error():
            raise ValueError(f"the Python grammar does not compile: {self.template.get_error()}")
        self.n_vocab = self.lltok.vocab_size
        self.words = (self.n_vocab + 31) // 32
        self.indent = indent_tables(vocab)
        n = len(vocab)
        mind = np.zeros(n, dtype=np.int16)
        net = np.zeros(n, dtype=np.int16)
        opaque = np.zeros(n, dtype=np.bool_)  # quotes, comments, escapes: leave to the grammar
        newline = np.zeros(n, dtype=np.bool_)
        for i, b in enumerate(vocab.token_bytes):
            newline[i] = b"\n" in b or b"\r" in b
            if any(c in b for c in b"'\"#\\"):
                opaque[i] = True
                continue
            d = low = 0
            for c in b:
                if c in b"([{":
                    d += 1
                elif c in b")]}":
                    d -= 1
                    low = min(low, d)
            mind[i], net[i] = low, d
        self.min_depth, self.net, self.opaque, self.newline = mind, net, opaque, newline
        # tokens that can close a string: they hold its quote (not right after a backslash)
        self.quote_closers = {
            q: np.array([q in b and b"\\" + q[:1] not in b for b in vocab.token_bytes], dtype=np.bool_)
            for q in (b"'", b'"', b"'''", b'"""')
        }
        self.lock = threading.Lock()

    def encode(self, text: bytes) -> list[int]:
        return self.lltok.tokenize_bytes(text) if text else []


_SHARED: dict[int, tuple[weakref.ref, Shared]] = {}


def shared_for(tokenizer, vocab: Vocab) -> Shared:
    """``Shared`` for ``tokenizer``, built once (~1–2 s: llguidance reads the whole vocabulary)."""
    hit = _SHARED.get(id(tokenizer))
    if hit is not None and hit[0]() is tokenizer:
        return hit[1]
    shared = Shared(tokenizer, vocab)
    _SHARED[id(tokenizer)] = (weakref.ref(tokenizer), shared)
    return shared


def forget_shared(tokenizer) -> None:
    """Drop the cached state of ``tokenizer`` (after a library panic poisoned it)."""
    _SHARED.pop(id(tokenizer), None)


@dataclass(frozen=True)
class GrammarConfig:
    """``single_line``: the engine stops at the first newline; ``max_new_tokens``: the budget —
    when only ``CLOSE_MARGIN`` more tokens than open brackets remain, tokens that close a bracket
    are preferred (a completion cut inside brackets is a syntax error for sure)."""

    single_line: bool = False
    max_new_tokens: int | None = None


class GrammarProcessor:
    """The grammar mask (see the module docstring). ``active`` is False once switched off."""

    def __init__(
        self,
        vocab: Vocab,
        stop_ids: Iterable[int],
        tokenizer,
        prefix: str = "",
        suffix: str = "",
        config: GrammarConfig | None = None,
        view: TextView | None = None,
        cursor: Cursor | None = None,
    ) -> None:
        """``view``: the request's shared ``TextView`` (moved by the chain; used when its region
        is this cursor's), else an own one; ``cursor``: ``analyse(prefix, suffix)`` if known."""
        self.vocab = vocab
        self.stop_ids = sorted(set(stop_ids))
        self.config = config or GrammarConfig()
        self.tokenizer = tokenizer
        self.active = False
        self.reason = ""
        self.matcher = None
        self.view: TextView | None = None
        self.owns_view = True
        self._shared_view = view
        self.tracker = IndentTracker()
        self.consumed: list[bool] = []  # per accepted token: did the matcher take it
        self.line_starts: list[int] = []  # token counts after each accepted token holding a newline
        self.block_floor: int | None = None  # no line may start left of it (see _left_of_block)
        self._floor_at = 0  # tokens accepted when block_floor was set
        self.suspended_at: int | None = None
        self._eos_cache: dict[tuple[int, bool], bool] = {}
        self._buf = None
        self.started = False
        if tokenizer is None:
            self._off("no tokenizer to build the grammar's token tables from")
            return
        try:
            self.shared = shared_for(tokenizer, vocab)
            self.cursor = cursor if cursor is not None else analyse(prefix, suffix)
            self._start()
        except BaseException as e:  # noqa: BLE001 - llguidance panics are BaseException
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            self._off(f"setup failed: {type(e).__name__}: {e}")
            forget_shared(tokenizer)
        finally:
            self._shared_view = None

    def report(self) -> dict:
        """Was the grammar on for this request, and if not, why (``reason``)."""
        return {"active": self.active, "reason": self.reason, "suspended": self.suspended_at is not None}

    # --- set-up ----------------------------------------------------------------------------
    def _off(self, reason: str) -> None:
        self.active = False
        self.reason = reason
        log.info("grammar: no constraint for this request (%s)", reason)

    def _start(self) -> None:
        cur: Cursor = self.cursor
        if cur.broken:
            return self._off(cur.broken)
        self.view, self.owns_view = adopt(self._shared_view, self.vocab, cur.region)
        self.started = True
        self._sync_tracker(IndentState())
        self.floor = cur.depth if cur.suffix_closes else 0
        self.base_depth = cur.depth
        self.matcher = self.shared.template.deep_copy()
        line = self.shared.encode(cur.region[cur.line_start :])
        if self.matcher.try_consume_tokens(line) != len(line):
            return self._off("the grammar rejects the current line")
        self.suffix_ids = self.shared.encode(cur.suffix_head)
        self._buf = np.zeros(self.shared.words, dtype=np.int32)
        self.active = True

    def _sync_tracker(self, initial: IndentState | None = None) -> None:
        """Feed the tracker the logical lines the lexer finished since it was last synced."""
        if initial is not None:
            self.tracker = IndentTracker(initial)
        lx = self.lexer
        for line in range(len(self.tracker), len(lx.line_ends)):
            end = lx.line_ends[line]
            last = lx.lexemes[end - 1]
            header = last.kind == OP and lx.buf[last.start : last.end] == b":"
            self.tracker.on_line(lx.line_indents[line], header)

    @property
    def lexer(self):
        return self.view.lexer

    # --- life cycle ------------------------------------------------------------------------
    def advance(self, ids: Sequence[int]) -> None:
        if not self.started:
            self.consumed.extend(False for _ in ids)
            return
        if self.owns_view:
            self.view.advance(ids)
        self._sync_tracker()
        for i in ids:
            i = int(i)
            took = False
            if self.active and self.suspended_at is None:
                took = self._guard(lambda i=i: self.matcher.try_consume_tokens([i]) == 1, False)
                if not took and self.active:
                    self.suspended_at = len(self.consumed)
            self.consumed.append(took)
            if 0 <= i < len(self.shared.newline) and self.shared.newline[i]:
                self.line_starts.append(len(self.consumed))

    def rollback(self, n: int) -> None:
        if not 0 <= n <= len(self.consumed):
            raise ValueError(f"rollback({n}) after {len(self.consumed)} tokens")
        if n == 0:
            return
        taken = sum(self.consumed[-n:])
        del self.consumed[-n:]
        if not self.started:
            return
        if self.owns_view:
            self.view.rollback(n)
        self.tracker.truncate(len(self.lexer.line_ends))
        while self.line_starts and self.line_starts[-1] > len(self.consumed):
            self.line_starts.pop()
        if self.block_floor is not None and len(self.consumed) < self._floor_at:
            self.block_floor = None
        if self.active and taken:
            self._guard(lambda: self.matcher.rollback(taken), None)
        if self.suspended_at is not None and self.suspended_at >= len(self.consumed):
            self.suspended_at = None
        for key in [k for k in self._eos_cache if k[0] > len(self.consumed)]:  # keyed by length: stale
            del self._eos_cache[key]

    def fork(self) -> GrammarProcessor:
        other = GrammarProcessor.__new__(GrammarProcessor)
        other.__dict__.update(self.__dict__)
        if self.started and self.owns_view:
            other.view = self.view.fork()
        other.tracker = self.tracker.copy()
        other.consumed = list(self.consumed)
        other.line_starts = list(self.line_starts)
        other._eos_cache = {}
        if self.active:
            other.matcher = self.matcher.deep_copy()
            other._buf = np.zeros_like(self._buf)
        return other

    def reset(self) -> None:
        self.rollback(len(self.consumed))
        self._eos_cache = {}

    def _guard(self, fn, default):
        """Run an llguidance call; a panic or error switches the processor off."""
        try:
            with self.shared.lock:
                return fn()
        except BaseException as e:  # noqa: BLE001 - pyo3 panics derive from BaseException
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            self._off(f"llguidance failed: {type(e).__name__}: {e}")
            forget_shared(self.tokenizer)
            return default

    # --- masks -----------------------------------------------------------------------------
    def __call__(
        self, logits: torch.Tensor, draft: Sequence[int] = (), parents: Sequence[int] | None = None
    ) -> torch.Tensor:
        if not self.active:
            check_rows(logits, draft, parents)
            return logits
        return walk_draft(self, logits, draft, parents, self._score_row)

    def _score_row(self, row: torch.Tensor) -> torch.Tensor | None:
        if not self.active or self.suspended_at is not None:
            return None
        allowed = self.allowed(row)
        if allowed is None:
            return None
        out = writable_copy(row)
        mask_row_(out, allowed)
        return out

    def grammar_mask(self) -> np.ndarray | None:
        """The llguidance mask for the next token (bool [n_vocab]); None when switched off."""
        buf = self._buf
        ok = self._guard(lambda: self.matcher.unsafe_compute_mask_ptr(buf.ctypes.data, buf.nbytes), False)
        if ok is False or not self.active:
            return None
        return np.unpackbits(buf.view(np.uint8), bitorder="little")[: self.shared.n_vocab].view(np.bool_)

    def own_mask(self) -> np.ndarray | None:
        """Indentation, bracket floor and single-line masks for the next token (bool [len(vocab)])."""
        lx, sh = self.lexer, self.shared
        out = None
        if lx.at_line_start():
            cur = lx.blank_columns()
            out = sh.indent.line_start_mask(self.tracker, cur)
            for below in (self._below_suffix(cur), self._left_of_block(cur)):
                if below is not None:
                    out = ~below if out is None else out & ~below
        in_text = lx.in_string or lx.in_comment
        if self.floor and not in_text:
            m = (sh.min_depth + lx.depth >= self.floor) | sh.opaque
            out = m if out is None else out & m
        if self.config.single_line and not in_text and lx.depth > self.base_depth:
            out = ~sh.newline if out is None else out & ~sh.newline
        return out

    def _below_suffix(self, cur: int) -> np.ndarray | None:
        """Code tokens that would start a line left of the suffix's first code line, when the
        completion could end here instead (the suffix could not follow such a line unless it
        were a block header — in infilling, the model running on past the gap)."""
        c = self.cursor
        if c.suffix_indent is None or c.suffix_indent == 0:
            return None
        if c.suffix_inline and c.region[c.line_start :].strip(b" \t\f"):
            return None  # the suffix goes on with the cursor's (non-blank) line
        if not self.can_end(line_start=True):
            return None
        t = self.shared.indent
        col = np.where(t.has_nl, t.lead, t.lead + cur)
        return t.code & (col < c.suffix_indent)

    def _left_of_block(self, cur: int) -> np.ndarray | None:
        """Code or comment tokens that would start a line left of ``block_floor`` (the completion
        running on past the gap into module-level code or ``# Test the function`` comment lines,
        where the indented suffix could never follow).

        ``block_floor`` is set at the completion's first line start (the cursor, or the end of
        a healed newline): the outermost indented block open there — the body of the top-level
        ``def``/``class`` — or the suffix's first line if that is further left; 0 (no floor) at
        module level or when the suffix does not start an indented line. Inner blocks are not a
        floor: an infill may close one and open a sibling (``elif``) that the suffix continues."""
        if self.block_floor is None:
            state, c = self.tracker.state, self.cursor
            outer = state.stack[1] if not state.broken and len(state.stack) > 1 else 0
            self.block_floor = min(outer, c.suffix_indent) if c.suffix_indent else 0
            self._floor_at = len(self.consumed)
        if not self.block_floor:
            return None
        t = self.shared.indent
        col = np.where(t.has_nl, t.lead, t.lead + cur)
        return (t.code | (t.kind == COMMENT)) & (col < self.block_floor)  # a comment line too

    def closing_mask(self) -> np.ndarray | None:
        """Near the end of the budget (bool [len(vocab)]): inside a string, the tokens that close
        it; else the tokens after which the brackets still open can all be closed in the tokens
        left (one closer per token, at worst): open + net(token) <= remaining - 1."""
        lx, sh = self.lexer, self.shared
        budget = self.config.max_new_tokens
        if budget is None or lx.in_comment:
            return None
        open_ = lx.depth - self.base_depth
        quote = lx.open_quote
        remaining = budget - len(self.consumed)
        if remaining > open_ + (1 if quote else 0) + CLOSE_MARGIN:
            return None
        if quote:
            return sh.quote_closers[quote]
        return (open_ + sh.net <= remaining - 1) & ~sh.opaque & (sh.min_depth + lx.depth >= self.floor)

    def next_line_wont_fit(self) -> bool:
        """At a line start, near the end of the budget: fewer tokens are left than the longest of
        the last ``LINE_WINDOW`` lines of this completion took (no estimate before one line)."""
        budget = self.config.max_new_tokens
        lx = self.lexer
        if budget is None or self.config.single_line or not self.line_starts or not lx.at_line_start():
            return False
        if lx.in_string or lx.in_comment:
            return False
        ends = [0, *self.line_starts][-(LINE_WINDOW + 1) :]
        longest = max(b - a for a, b in zip(ends, ends[1:], strict=False))
        return budget - len(self.consumed) < longest

    def allowed(self, row: torch.Tensor) -> np.ndarray | None:
        """The allowed ids for ``row``'s position (bool [<= V]); None: leave the row alone."""
        gram = self.grammar_mask()
        if gram is None:
            return None
        v = row.shape[-1]
        stops = [s for s in self.stop_ids if s < v]
        if stops and self.next_line_wont_fit() and self.can_end(line_start=True):
            only = np.zeros(v, dtype=np.bool_)
            only[stops] = True
            return only
        if gram.shape[0] >= v:
            allowed = gram[:v]  # a fresh array: ours to edit
        else:  # the model has more ids than the tokenizer: those are never allowed
            allowed = np.zeros(v, dtype=np.bool_)
            allowed[: gram.shape[0]] = gram
        for extra in (self.own_mask(), self.closing_mask()):  # each dropped if it leaves nothing
            if extra is not None:
                k = min(v, extra.shape[0])
                combined = allowed.copy()
                combined[:k] &= extra[:k]
                if combined.any():
                    allowed = combined
        allowed[stops] = False
        if not allowed.any():
            return None  # nothing is left: never block a completion
        if stops:
            values = as_numpy(row)
            values = values if values is not None else row.detach().float().cpu().numpy()
            best = float(values[allowed].max())
            for s in stops:
                if float(values[s]) >= best - EOS_MARGIN and self.can_end():
                    allowed[s] = True
        return allowed

    def can_end(self, line_start: bool = False) -> bool:
        """Whether the completion may end here: the suffix head must follow, at a valid indent.
        ``line_start``: as if the blanks written on this line so far were not there."""
        key = (len(self.consumed), line_start)
        hit = self._eos_cache.get(key)
        if hit is not None:
            return hit
        ok = self._guard(lambda: self._joins_suffix(line_start), True)
        if len(self._eos_cache) > 1024:
            self._eos_cache.clear()
        self._eos_cache[key] = ok
        return ok

    def _joins_suffix(self, line_start: bool = False) -> bool:
        """0. the brackets the completion opened are closed (all of them at the end of the file);
        1. a copy of the matcher consumes the suffix head; 2. the suffix's first code sits at a
        valid indentation: on the cursor's line when that line is still blank, else on the line
        after the current one (which the suffix's newline ends first); at the end of the file the
        last line may not be a block header."""
        cur, lx = self.cursor, self.lexer
        if lx.depth != (0 if cur.at_eof else cur.depth):
            return False  # the completion's own brackets must be closed (the suffix closes the rest)
        probe = self.matcher.deep_copy()
        if probe.try_consume_tokens(self.suffix_ids) != len(self.suffix_ids):
            return False
        state = self.tracker.state
        if state.broken:
            return True
        if lx.at_line_start():
            if cur.at_eof:
                return not state.expect_indent
            if not cur.suffix_inline:
                return _indent_ok(state, cur.suffix_indent)
            return _indent_ok(state, (0 if line_start else lx.blank_columns()) + cur.suffix_indent)
        if cur.suffix_inline:
            return True  # the suffix continues this line; its later lines are not checked
        tail = bytes(lx.buf[lx.line_ws_start :]).rstrip()
        indent = lx.line_indents[-1] if len(lx.line_indents) > len(lx.line_ends) else state.stack[-1]
        state = IndentTracker.step(state, indent, tail.endswith(b":"))
        if state.broken:
            return True
        if cur.at_eof:
            return not state.expect_indent
        return _indent_ok(state, cur.suffix_indent)


def _indent_ok(state: IndentState, width: int) -> bool:
    if state.expect_indent:
        return width > state.stack[-1]
    return width in state.stack
