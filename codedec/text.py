"""Text as it arrives from editors and clients, made safe for the tokenizer and the heuristics.

Two rules, applied wherever text enters (documents, requests):

* **Lone surrogates** (``"\\ud800"``: valid in a JSON string, not a character; an editor that
  splits a UTF-16 pair, a file read with ``surrogateescape``) become U+FFFD. The replacement
  is one code point and one UTF-16 unit, so LSP positions stay valid. The tokenizer refuses
  them with a TypeError otherwise.
* **Line ends**: LSP counts ``\\r\\n``, ``\\r`` and ``\\n`` as line ends. :func:`lines_normalized`
  turns the first two into ``\\n`` for the model and the line heuristics (documents keep
  their own line ends; positions are converted with :mod:`lsp_server.positions`).
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
EOL = re.compile(r"\r\n|\r|\n")  # an LSP line end


def replace_surrogates(text: str) -> tuple[str, int]:
    """``text`` with each lone surrogate replaced by U+FFFD, and how many were replaced.

    (A Python ``str`` never holds a *paired* surrogate: a pair decodes to one code point.)
    """
    if text.isascii():
        return text, 0
    try:
        text.encode("utf-8")  # C speed; only a lone surrogate makes it fail
        return text, 0
    except UnicodeEncodeError:
        return _SURROGATE.subn(REPLACEMENT, text)


def log_replaced(doc: str, n: int, reported: set[str]) -> None:
    """One warning per document (``reported`` remembers which) when ``n`` > 0 surrogates of
    ``doc`` were replaced."""
    if n and doc not in reported:
        reported.add(doc)
        log.warning("%s: %d lone surrogate(s) replaced with U+FFFD (reported once per document)", doc, n)


def lines_normalized(text: str) -> str:
    """``text`` with ``\\r\\n`` and lone ``\\r`` line ends as ``\\n``."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def for_model(text: str) -> str:
    """Both rules: what the tokenizer and the completion heuristics may see."""
    return lines_normalized(replace_surrogates(text)[0])
