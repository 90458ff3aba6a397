"""The vocabulary as raw bytes: one table per tokenizer, shared by every byte-level consumer.

What it is: for each token id, the exact bytes that token contributes to the output text, plus a
sorted index for prefix queries ("which tokens start with these bytes?", "which tokens are a prefix
of these bytes?"). The incremental detokenizer, token healing and (later) the monitor trie and the
grammar masks all work on these bytes, so a token that holds half of a UTF-8 character is handled
the same way everywhere.

What it is not: a tokenizer. Encoding text stays with the HF tokenizer.

Two vocabulary styles are understood:
1. byte-level BPE (GPT-2, SmolLM2, DeepSeek-Coder, Qwen2.5, StarCoder2): each character of a token
   string stands for one byte through GPT-2's printable byte alphabet;
2. SentencePiece-style (Llama-2, CodeLlama): ``▁`` is a space and ``<0xAB>`` is the raw byte 0xAB.
Added tokens (special or not) contribute their content; special tokens are flagged so that they are
never offered as text (healing, constraints) and never printed by the detokenizer.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from functools import lru_cache

log = logging.getLogger(__name__)

_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's map from its printable stand-in characters back to the 256 byte values."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    return "ByteLevel" in json.dumps(spec.get("decoder")) or "ByteLevel" in json.dumps(
        spec.get("pre_tokenizer")
    )


@dataclass
class Vocab:
    """Bytes of every token id and a prefix index over them.

    ``token_bytes[i]`` is what id ``i`` adds to the text (``b""`` for ids with no text);
    ``special`` holds ids that must never be treated as text.
    """

    token_bytes: list[bytes]
    special: frozenset[int]
    _sorted: list[bytes] = field(init=False, repr=False)
    _sorted_ids: list[int] = field(init=False, repr=False)
    _by_bytes: dict[bytes, list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pairs = sorted(
            (b, i) for i, b in enumerate(self.token_bytes) if b and i not in self.special
        )
        self._sorted = [b for b, _ in pairs]
        self._sorted_ids = [i for _, i in pairs]
        self._by_bytes = {}
        for b, i in pairs:
            self._by_bytes.setdefault(b, []).append(i)

    def __len__(self) -> int:
        return len(self.token_bytes)

    def text_of(self, token_id: int) -> bytes:
        """The bytes id ``token_id`` writes into code: ``b""`` for special and unknown ids (what
        processors that follow the generated text feed their lexers)."""
        i = int(token_id)
        return self.token_bytes[i] if 0 <= i < len(self.token_bytes) and i not in self.special else b""

    def ids_starting_with(self, prefix: bytes) -> list[int]:
        """Text token ids whose bytes start with ``prefix`` (a contiguous run of the sorted index)."""
        lo = bisect.bisect_left(self._sorted, prefix)
        upper = _successor(prefix)
        hi = len(self._sorted) if upper is None else bisect.bisect_left(self._sorted, upper)
        return self._sorted_ids[lo:hi]

    def ids_prefix_of(self, text: bytes) -> list[int]:
        """Text token ids whose (non-empty) bytes are a prefix of ``text``: at most len(text) lookups."""
        out: list[int] = []
        for end in range(1, len(text) + 1):
            out.extend(self._by_bytes.get(text[:end], ()))
        return out

    def ids_compatible_with(self, pending: bytes) -> list[int]:
        """Ids a generation may take while ``pending`` bytes must still be produced next:
        the token either covers all of ``pending`` (and maybe more) or is a prefix of it."""
        if not pending:
            raise ValueError("ids_compatible_with needs non-empty pending bytes")
        return sorted(set(self.ids_starting_with(pending)) | set(self.ids_prefix_of(pending)))


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix``
    (None when there is none, i.e. ``prefix`` is empty or all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vocab_for(tokenizer) -> Vocab:
    """The ``Vocab`` of an HF tokenizer, built once per tokenizer object (~0.1 s for 50k ids)."""
    try:
        return _CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = build_vocab(tokenizer)
    try:
        _CACHE[tokenizer] = vocab
    except TypeError:  # pragma: no cover - tokenizers that cannot be weak-referenced
        pass
    return vocab


def build_vocab(tokenizer) -> Vocab:
    """Build the byte table of ``tokenizer`` (see the module docstring for the styles handled)."""
    size = len(tokenizer)
    byte_level = _is_byte_level(tokenizer)
    decoder = _byte_decoder()
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    special = frozenset(i for i, t in added.items() if t.special) | frozenset(
        i for i in tokenizer.all_special_ids if i is not None
    )
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    table: list[bytes] = []
    for i, piece in enumerate(pieces):
        if piece is None:
            table.append(b"")
        elif i in added:
            table.append(added[i].content.encode("utf-8"))
        elif byte_level:
            try:
                table.append(bytes(decoder[c] for c in piece))
            except KeyError:  # a piece outside the byte alphabet: take its text as is
                table.append(piece.encode("utf-8"))
        else:
            m = _SP_BYTE.match(piece)
            table.append(bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode("utf-8"))
    log.debug("vocab: %d ids, byte_level=%s, %d special", size, byte_level, len(special))
    return Vocab(table, special)
