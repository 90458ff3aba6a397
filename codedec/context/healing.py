"""Token healing, prompt side: back the prompt up to a token boundary the model knows.

Algorithm (``heal_tail``):
1. Find the trailing *run* of the prompt text: the maximal suffix of one character class —
   whitespace (newlines included), identifier characters, or other symbols.
2. Remove every trailing token that overlaps that run (at most ``max_tokens``, never a special
   token, never the whole prompt). A token that starts before the run is removed too: for
   ``" retu"`` tokenized as ``' ret' + 'u'`` both go, so the model may pick ``' return'``.
3. Return the kept ids and the removed text; the engine's ``HealingProcessor`` makes the first
   generated tokens re-create that text, and the text is stripped from the completion.

So a prompt ending in a bare ``"\\n"`` lets the model choose its usual newline+indent token, and a
cursor inside an identifier lets it finish the word with a whole-word token.
"""

from __future__ import annotations

from collections.abc import Sequence

from codedec.vocab import Vocab

MAX_HEAL_TOKENS = 4


def _char_class(ch: str) -> int:
    if ch.isspace():
        return 0
    if ch.isalnum() or ch == "_":
        return 1
    return 2


def trailing_run(text: str) -> int:
    """Length in characters of the maximal suffix of ``text`` made of one character class."""
    if not text:
        return 0
    cls = _char_class(text[-1])
    n = 0
    for ch in reversed(text):
        if _char_class(ch) != cls:
            break
        n += 1
    return n


def heal_tail(ids: Sequence[int], vocab: Vocab, max_tokens: int = MAX_HEAL_TOKENS) -> tuple[list[int], str]:
    """Split ``ids`` into (kept ids, healed text) as described in the module docstring.

    The healed text is ``""`` when nothing can be removed (a one-token prompt, a special token at
    the end, a tail that does not decode to whole characters).
    """
    ids = list(ids)
    if len(ids) < 2 or max_tokens <= 0:
        return ids, ""
    # Bytes of the last few tokens are enough to see the run we may remove.
    window = ids[-(max_tokens + 8) :]
    if any(i in vocab.special for i in window[-1:]):
        return ids, ""
    tail_bytes = [vocab.token_bytes[i] if i < len(vocab) else b"" for i in window]
    joined = b"".join(tail_bytes)
    try:
        tail_text = joined.decode("utf-8")
    except UnicodeDecodeError:
        # The window may start mid-character; only the run at the very end matters.
        tail_text = joined.decode("utf-8", errors="ignore")
    run_bytes = len(tail_text[len(tail_text) - trailing_run(tail_text) :].encode("utf-8"))
    removed = 0
    covered = 0  # bytes of the removed tokens
    while removed < min(max_tokens, len(ids) - 1) and covered < run_bytes:
        candidate = ids[-(removed + 1)]
        if candidate in vocab.special:
            break
        covered += len(vocab.token_bytes[candidate]) if candidate < len(vocab) else 0
        removed += 1
    if removed == 0:
        return ids, ""
    removed_bytes = b"".join(tail_bytes[-removed:])
    try:
        healed = removed_bytes.decode("utf-8")
    except UnicodeDecodeError:  # the removed tokens start inside a character: do not heal
        return ids, ""
    return ids[:-removed], healed
