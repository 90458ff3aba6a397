"""When to complete, and how much: none / single-line / multi-line, from the text around the cursor.

Pure functions on (prefix, suffix) strings, shared by every editor (the llm-ls / llama.vim rules):

1. Nothing to complete from (only whitespace before the cursor) -> ``none``.
2. The cursor is inside a word (an identifier character right after it) -> ``none``: a suggestion
   would have to be spliced into a token the user is editing.
3. Text after the cursor on the same line that is not just closing brackets, quotes and separators
   (``foo(|, y)``, ``x = |value``) -> ``none``.
4. Closing characters after the cursor (``print(|)``) -> ``single``: finish this line only.
5. Otherwise ``line_mode`` decides when forced (``single`` / ``multi``); ``auto`` gives ``multi`` on
   a blank or indentation-only line and right after a block opener at the end of a line
   (``def f(x):|``), and ``single`` in the middle of a statement.

What it is not: the post-processing of the generated text (``postprocess.py``).
"""

from __future__ import annotations

NONE, SINGLE, MULTI = "none", "single", "multi"

# Characters that may follow the cursor on its line without blocking a completion.
TRAILING_OK = set(")]}>\"'`;:,. \t\r")
BLOCK_OPENERS = (":", "{")  # "(" and "[" usually close on the same line: single


def is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def line_prefix(prefix: str) -> str:
    """The text of the cursor's line before the cursor."""
    return prefix[prefix.rfind("\n") + 1 :]


def line_suffix(suffix: str) -> str:
    """The text of the cursor's line after the cursor (without the line break)."""
    end = suffix.find("\n")
    return (suffix if end < 0 else suffix[:end]).rstrip("\r")


def word_before(prefix: str) -> str:
    """The identifier characters right before the cursor (what a client filters items by)."""
    i = len(prefix)
    while i > 0 and is_word_char(prefix[i - 1]):
        i -= 1
    return prefix[i:]


def decide_mode(prefix: str, suffix: str, line_mode: str = "auto") -> str:
    """``none``, ``single`` or ``multi`` for a cursor between ``prefix`` and ``suffix`` (see the
    module docstring for the rules, in order). ``line_mode`` is ``auto``, ``single`` or ``multi``."""
    if line_mode not in ("auto", SINGLE, MULTI):
        raise ValueError(f"line_mode must be auto, single or multi; got {line_mode!r}")
    if not prefix.strip():
        return NONE
    after = line_suffix(suffix)
    if after and is_word_char(after[0]):
        return NONE
    if any(c not in TRAILING_OK for c in after):
        return NONE
    if after.strip():
        return SINGLE
    if line_mode != "auto":
        return line_mode
    before = line_prefix(prefix)
    if not before.strip():
        return MULTI
    if before.rstrip().endswith(BLOCK_OPENERS) and before == before.rstrip():
        return MULTI
    return SINGLE


def last_code_line(text: str) -> str:
    """The last line of ``text`` with a non-blank character ("" if none), searched from the end
    (a prompt's prefix can be a whole file)."""
    end = len(text)
    while end >= 0:
        start = text.rfind("\n", 0, end) + 1
        if text[start:end].strip():
            return text[start:end]
        end = start - 1
    return ""


def block_floor(prefix: str, tab_width: int = 4) -> int:
    """The indentation (columns) below which a multi-line completion at the end of ``prefix`` has
    left the cursor's block: the indentation of the cursor's line when it has text before the
    cursor, else of the last non-blank line above — one column more when that line opens a block
    (``def f(x):``: its body is indented deeper, by whatever unit the file uses). 0 at the top
    level (nothing ends the completion early)."""
    before = line_prefix(prefix)
    ref = before if before.strip() else last_code_line(prefix[: len(prefix) - len(before)])
    if not ref:
        return 0
    width = len(ref[: len(ref) - len(ref.lstrip(" \t"))].expandtabs(tab_width))
    return width + 1 if ref.rstrip().endswith(BLOCK_OPENERS) else width
