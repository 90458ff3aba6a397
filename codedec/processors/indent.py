"""Python indentation as a token mask: the part of the syntax a context-free grammar cannot say.

What it is:
- ``IndentTracker``: the stack of open block indentations, updated once per finished logical
  line (``on_line(width, header)``), with exact ``rollback``. After a block header (``if x:``)
  the next statement must be indented deeper than the header; otherwise it must sit at a width
  on the stack (same block or a dedent to an enclosing one). A line that breaks this (a dedent to
  an unknown width) marks the tracker ``broken``: from then on it has no opinion.
- ``IndentTables``: per-token facts computed once per vocabulary (leading blank columns, whether
  the blank run holds a newline, whether code or a comment follows) so that the mask at the start
  of a line is a few vectorised comparisons over the vocabulary.

What it is not: a tokenizer of its own — the processors feed it from ``pylex.PyLexer``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from codedec.processors.pylex import indent_width
from codedec.vocab import Vocab

PURE_BLANK, CODE, COMMENT, NO_TEXT = 0, 1, 2, 3


@dataclass(frozen=True)
class IndentState:
    stack: tuple[int, ...] = (0,)
    expect_indent: bool = False  # the last line was a block header
    broken: bool = False


class IndentTracker:
    """Indentation stack over logical lines, with one saved state per line for rollback."""

    def __init__(self, state: IndentState | None = None) -> None:
        self.history: list[IndentState] = [state or IndentState()]

    @property
    def state(self) -> IndentState:
        return self.history[-1]

    def __len__(self) -> int:
        return len(self.history) - 1

    @staticmethod
    def step(state: IndentState, width: int, header: bool) -> IndentState:
        """The state after a logical line at ``width`` (a block header when ``header``)."""
        if state.broken:
            return state
        stack = state.stack
        if state.expect_indent:
            if width <= stack[-1]:
                return IndentState(stack, False, True)
            stack = stack + (width,)
        else:
            while len(stack) > 1 and stack[-1] > width:
                stack = stack[:-1]
            if stack[-1] != width:
                return IndentState(stack, False, True)
        return IndentState(stack, header, False)

    def on_line(self, width: int, header: bool) -> None:
        self.history.append(self.step(self.state, width, header))

    def truncate(self, lines: int) -> None:
        """Keep the state after the first ``lines`` lines."""
        del self.history[lines + 1 :]

    def copy(self) -> IndentTracker:
        other = IndentTracker.__new__(IndentTracker)
        other.history = list(self.history)
        return other

    def widths_ok(self, col: np.ndarray) -> np.ndarray:
        """Which statement start columns ``col`` (int array) are valid now (bool, same shape)."""
        st = self.state
        if st.expect_indent:
            return col > st.stack[-1]
        table = np.zeros(max(st.stack) + 2, dtype=np.bool_)  # a lookup beats isin on 50k entries
        table[list(st.stack)] = True
        return table[np.minimum(col, len(table) - 1)]

    def max_blank(self) -> int | None:
        """The widest blank run a line may start with (None: any, a deeper block is due)."""
        st = self.state
        return None if st.expect_indent else st.stack[-1]


class IndentTables:
    """Per-token indentation facts (see the module docstring), built once per vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        n = len(vocab)
        lead = np.zeros(n, dtype=np.int32)
        has_nl = np.zeros(n, dtype=np.bool_)
        kind = np.full(n, NO_TEXT, dtype=np.int8)
        for i, b in enumerate(vocab.token_bytes):
            if not b or i in vocab.special:
                continue
            stripped = b.lstrip(b" \t\f\r\n")
            blank = b[: len(b) - len(stripped)]
            nl = blank.rfind(b"\n")
            has_nl[i] = nl >= 0
            lead[i] = indent_width(blank[nl + 1 :].replace(b"\r", b"").replace(b"\f", b""))
            kind[i] = PURE_BLANK if not stripped else COMMENT if stripped.startswith(b"#") else CODE
        self.lead, self.has_nl, self.kind = lead, has_nl, kind

        self.code = kind == CODE
        self.free = (kind == COMMENT) | (kind == NO_TEXT)

    def line_start_mask(self, tracker: IndentTracker, cur: int) -> np.ndarray | None:
        """Allowed ids at the start of a line whose blank prefix so far spans ``cur`` columns
        (bool [V]); None when the tracker has no opinion."""
        st = tracker.state
        if st.broken:
            return None
        col = np.where(self.has_nl, self.lead, self.lead + cur)
        code_ok = tracker.widths_ok(col)
        widest = tracker.max_blank()
        blank_ok = np.ones_like(code_ok) if widest is None else col <= widest
        ok = np.where(self.code, code_ok, blank_ok)
        ok |= self.free
        return ok


_TABLES: dict[int, tuple[weakref.ref, IndentTables]] = {}


def indent_tables(vocab: Vocab) -> IndentTables:
    """``IndentTables`` of ``vocab``, built once (~0.1 s for 50k ids)."""
    hit = _TABLES.get(id(vocab))
    if hit is not None and hit[0]() is vocab:
        return hit[1]
    tables = IndentTables(vocab)
    _TABLES[id(vocab)] = (weakref.ref(vocab), tables)
    return tables
