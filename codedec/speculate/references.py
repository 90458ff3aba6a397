"""What a request's suffix index reads besides its prompt: the text after the cursor, and after an
edit the previous completion and the text the edit replaced ("use the old code as the draft").

What it is: pure functions from the request's text (and the previous request of the same
document, ``Previous``) to reference texts and token ids for ``suffix_tree.Drafter``. The service
keeps one ``Previous`` per document.

What it is not: the index or the service's bookkeeping.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

from codedec.cache import common_prefix_len

SUFFIX_CHARS = 4096  # text after the cursor read into the index (about 1000 tokens of code)
AROUND_CHARS = 512  # text kept on each side of an edited region


CONTEXT_IDS = 32  # prompt ids kept before a remembered completion (a draft can match from step 0)


@dataclass(frozen=True)
class Previous:
    """The last completion of a document: the text around its cursor, the ids it generated and
    the last ``CONTEXT_IDS`` prompt ids before them (so the next request's prompt tail, usually
    the same after an edit elsewhere, matches right before the completion)."""

    prefix: str
    suffix: str
    completion_ids: tuple[int, ...]
    context_ids: tuple[int, ...] = ()


def edit_span(old: str, new: str) -> tuple[int, int, int]:
    """``(start, old_end, new_end)``: ``old[start:old_end]`` became ``new[start:new_end]`` (the
    longest common prefix and suffix removed; an unchanged text gives an empty span)."""
    start = common_prefix_len(old, new)
    tail = common_prefix_len(old[start:][::-1], new[start:][::-1])  # the common suffix after the prefix
    return start, len(old) - tail, len(new) - tail


def reference_texts(prefix: str, suffix: str, previous: Previous | None, with_suffix: bool = True) -> list[str]:
    """Texts worth drafting from: the start of ``suffix`` (when the prompt does not hold it
    already: ``with_suffix``) and, when the document changed since ``previous``, the old text
    around the replaced region (what the user is rewriting often comes back)."""
    texts = [suffix[:SUFFIX_CHARS]] if with_suffix and suffix else []
    if previous is not None:
        old, new = previous.prefix + previous.suffix, prefix + suffix
        start, old_end, _new_end = edit_span(old, new)
        if old_end > start:  # something was removed or replaced
            texts.append(old[max(0, start - AROUND_CHARS) : old_end + AROUND_CHARS])
    return [t for t in texts if t]


ENCODED_MEMO = 8  # reference texts whose ids are remembered per tokenizer (least recently used evicted)
# tokenizer -> OrderedDict(text -> ids): while the user types, the text after the cursor (up to
# SUFFIX_CHARS) is the same on every keystroke; it is tokenized once, not per request.
_ENCODED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encode(tokenizer, text: str) -> list[int]:
    """``tokenizer.encode(text)`` without special tokens, remembered for the last ``ENCODED_MEMO``
    texts (a fresh list each call)."""
    try:
        memo = _ENCODED.setdefault(tokenizer, OrderedDict())
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        return tokenizer.encode(text, add_special_tokens=False)
    ids = memo.get(text)
    if ids is None:
        ids = memo[text] = tuple(tokenizer.encode(text, add_special_tokens=False))
        while len(memo) > ENCODED_MEMO:
            memo.popitem(last=False)
    else:
        memo.move_to_end(text)
    return list(ids)


def reference_ids(tokenizer, prefix: str, suffix: str, previous: Previous | None,
                  with_suffix: bool = True) -> list[list[int]]:
    """``reference_texts`` tokenized (each text's ids remembered: see ``_encode``), then the
    previous completion's ids after its prompt's tail (the strongest draft after an edit
    elsewhere: the model tends to write it again)."""
    out = [_encode(tokenizer, t) for t in reference_texts(prefix, suffix, previous, with_suffix)]
    if previous is not None and previous.completion_ids:
        out.append(list(previous.context_ids) + list(previous.completion_ids))
    return [ids for ids in out if ids]
