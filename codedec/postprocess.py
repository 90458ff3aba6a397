"""Clean a generated completion before it is shown: lines, indentation, closers, suffix overlap.

Pure functions; ``finalize`` applies them in this order:

1. ``single`` mode keeps the first line only.
2. ``fix_indentation``: leading tabs/spaces follow the document's style, and when the cursor sits
   on an indentation-only line the first line is not indented past what the block allows (the
   other lines shift with it, keeping their relative indentation).
3. ``strip_duplicate_closers``: when the text after the cursor starts with closing brackets or
   quotes that the editor already inserted (``print(|)``), the completion is cut at its first
   closer that closes something opened before the cursor — never ``print(x))``. Brackets the
   completion opens and closes itself are kept (``foo(|)`` + ``f(x)`` stays ``f(x)``).
4. ``trim_suffix_overlap``: the completion's tail that repeats the start of the suffix is cut, and
   so is everything from a completion line equal to the next non-blank line after the cursor.
5. ``cut_repetition`` (in the spirit of DeRep, Dong et al. 2025): a run of text the model
   repeats back to back is kept once — a phrase of 16+ characters repeated inside a line (the
   string literal saying the same sentence six times keeps it once and its closing quote), and
   a line or a block of lines repeated right after itself (the completion ends after the first
   copy). Repeats that are not back to back are code's normal shape and stay, and so does data
   (a phrase with no letter, or one that is itself periodic: ``[0, 0, 0, ...]``).
6. Trailing whitespace goes; a completion of only whitespace becomes ``""`` (nothing to show).
"""

from __future__ import annotations

import re

from codedec.heuristics import BLOCK_OPENERS, SINGLE, last_code_line, line_prefix, line_suffix

CLOSERS = {")": "(", "]": "[", "}": "{"}
QUOTES = "\"'`"
TAB_WIDTH = 4


def _lead(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _width(ws: str) -> int:
    return len(ws.expandtabs(TAB_WIDTH))


def detect_indent_unit(text: str) -> str:
    """``"\\t"`` when tab-indented lines outnumber space-indented ones, else the most common
    positive step between consecutive indentation widths (2, 4, 8...), default four spaces."""
    tabs = spaces = 0
    steps: dict[int, int] = {}
    prev = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        lead = _lead(line)
        if lead.startswith("\t"):
            tabs += 1
        elif lead:
            spaces += 1
        w = _width(lead)
        if w > prev:
            steps[w - prev] = steps.get(w - prev, 0) + 1
        prev = w
    if tabs > spaces:
        return "\t"
    if not steps:
        return " " * TAB_WIDTH
    return " " * max(steps, key=lambda k: (steps[k], -k))


def fix_indentation(completion: str, prefix: str) -> str:
    """Indentation of ``completion`` made consistent with the document before the cursor (step 2
    of the module docstring)."""
    unit = detect_indent_unit(prefix)
    lines = completion.split("\n")
    out = []
    for line in lines:
        lead = _lead(line)
        if unit == "\t" and " " * TAB_WIDTH in lead:
            lead = lead.replace(" " * TAB_WIDTH, "\t")
        elif unit != "\t" and "\t" in lead:
            lead = lead.replace("\t", unit)
        out.append(lead + line[len(_lead(line)) :])
    before = line_prefix(prefix)
    if before and not before.strip():
        prev = last_code_line(prefix[: len(prefix) - len(before)])
        allowed = _width(_lead(prev)) + (_width(unit) if prev.rstrip().endswith(BLOCK_OPENERS) else 0)
        extra = _width(_lead(out[0]))
        over = _width(before) + extra - allowed
        if extra and over > 0:
            cut = min(extra, over)
            out = [_dedent(line, cut) if i == 0 or line.strip() else line for i, line in enumerate(out)]
    return "\n".join(out)


def _dedent(line: str, width: int) -> str:
    lead = _lead(line)
    if _width(lead) < width:
        return line
    expanded = lead.expandtabs(TAB_WIDTH)
    return expanded[width:] + line[len(lead) :]


def open_quote(line_before: str) -> str | None:
    """The quote character of a string literal still open at the end of ``line_before``."""
    quote = None
    i = 0
    while i < len(line_before):
        c = line_before[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in QUOTES:
            quote = c
        i += 1
    return quote


def first_unmatched_closer(text: str, in_string: str | None = None) -> int | None:
    """Index of the first character of ``text`` that closes a bracket or string opened before it
    (``in_string``: the quote of a string open at the start of ``text``), else None."""
    stack: list[str] = []
    quote = in_string
    outer = in_string is not None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                if outer:
                    return i
                quote = None
        elif c in QUOTES:
            quote = c
        elif c in "([{":
            stack.append(c)
        elif c in CLOSERS:
            if not stack or stack[-1] != CLOSERS[c]:
                return i
            stack.pop()
        i += 1
    return None


def strip_duplicate_closers(completion: str, after: str, in_string: str | None = None) -> str:
    """Cut ``completion`` at its first closer of something opened before the cursor when the text
    ``after`` the cursor already starts with that closer (step 3 of the module docstring)."""
    head = after.lstrip(" \t")
    if not head or (head[0] not in CLOSERS and head[0] not in QUOTES):
        return completion
    pos = first_unmatched_closer(completion, in_string)
    if pos is None or completion[pos] != head[0]:
        return completion
    return completion[:pos].rstrip(" \t")


def trim_suffix_overlap(completion: str, prefix: str, suffix: str, min_chars: int = 4) -> str:
    """Drop what the suffix already has (step 4 of the module docstring).

    1. The longest tail of ``completion`` equal to the head of ``suffix`` with at least
       ``min_chars`` non-blank characters is removed.
    2. From the first completion line equal (ignoring surrounding whitespace) to the next non-blank
       line after the cursor's line, the rest is removed; the first line counts only when the
       cursor's line is blank before the cursor.
    """
    limit = min(len(completion), len(suffix), 2000)
    for k in range(limit, 0, -1):
        head = suffix[:k]
        if len(head.strip()) < min_chars:
            break
        if completion.endswith(head):
            completion = completion[:-k]
            break
    rest = suffix.split("\n")[1:]
    following = next((ln.strip() for ln in rest if ln.strip()), None)
    if following is not None:
        lines = completion.split("\n")
        start = 0 if not line_prefix(prefix).strip() else 1
        for i in range(start, len(lines)):
            if lines[i].strip() == following:
                completion = "\n".join(lines[:i])
                break
    return completion


MIN_PHRASE = 16  # characters: a shorter unit repeated inside a line is not cut ("hello hello")
MIN_LINE = 6  # non-blank characters: shorter lines (closers, ``pass``, ``else:``) may repeat
_PHRASE = re.compile(r"(\S.{" + str(MIN_PHRASE - 1) + r",}?)(?:\s*\1)+")
_SCAN_CHARS = 600  # longer lines are not scanned for phrases (the scan is quadratic: 20 ms at 600)


def _periodic(unit: str) -> bool:
    """Does ``unit`` repeat a piece of at most half its length (``"0, 0, 0, 0"``)?"""
    return any(unit[p:] == unit[:-p] for p in range(1, len(unit) // 2 + 1))


def _collapse_phrases(line: str) -> str:
    """``line`` with each back-to-back repeat of a 16+ character phrase kept once; a partial
    copy the generation was cut in the middle of goes too."""
    if len(line) > _SCAN_CHARS:
        return line
    out, pos = [], 0
    for m in _PHRASE.finditer(line):
        unit = m.group(1)
        if _periodic(unit) or not any(c.isalpha() for c in unit):  # data: [0, 0, 0, ...], "----"
            continue
        out.append(line[pos : m.start()] + unit)
        pos = m.end()
        rest = line[pos:]
        stripped = rest.lstrip()
        if stripped and len(stripped) < len(unit) and unit.startswith(stripped):  # a cut-off copy
            pos = len(line)
    out.append(line[pos:])
    return "".join(out)


def cut_repetition(completion: str) -> str:
    """Step 5 of the module docstring: repeated phrases inside lines kept once; the completion
    ends before the first line or block of lines that repeats the one right before it."""
    lines = [_collapse_phrases(line) for line in completion.split("\n")]
    keys = [line.strip() for line in lines]
    for i in range(1, len(lines)):
        for k in range(1, min(i, len(lines) - i) + 1):  # the k lines before i, again from i
            block = keys[i - k : i]
            if block == keys[i : i + k] and any(len(x) >= MIN_LINE for x in block):
                return "\n".join(lines[:i])
    return "\n".join(lines)


def finalize(completion: str, prefix: str, suffix: str, mode: str) -> str:
    """The text to show for ``completion`` generated between ``prefix`` and ``suffix``."""
    if mode == SINGLE:
        completion = completion.split("\n", 1)[0].rstrip("\r")
    if not completion.strip():
        return ""
    completion = fix_indentation(completion, prefix)
    after = line_suffix(suffix)
    if after.strip():
        completion = strip_duplicate_closers(completion, after, open_quote(line_prefix(prefix)))
    completion = trim_suffix_overlap(completion, prefix, suffix)
    completion = cut_repetition(completion)
    completion = completion.rstrip()
    return completion if completion.strip() else ""
