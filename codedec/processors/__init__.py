"""Logits processors: the protocol (``base``), small real processors (``basic``), token healing
(``healing``), and the code-aware ones — ``rpg`` (repetition penalty), ``grammar`` (Python syntax,
indentation, suffix consistency) and ``monitor`` (monitor-guided decoding). Shared machinery:
``pylex`` (incremental lexer), ``indent``, ``cursor``, ``python_grammar``, ``masking``."""

from codedec.processors.base import LogitsProcessor, ProcessorChain, StatefulProcessor
from codedec.processors.basic import BannedTokens, MinNewTokens
from codedec.processors.healing import HealingProcessor

__all__ = [
    "BannedTokens",
    "GrammarProcessor",
    "HealingProcessor",
    "LogitsProcessor",
    "MinNewTokens",
    "MonitorProcessor",
    "ProcessorChain",
    "RPGProcessor",
    "StatefulProcessor",
]


def __getattr__(name: str):
    # the code-aware processors import llguidance / tree-sitter / pygls: load them on first use
    if name == "GrammarProcessor":
        from codedec.processors.grammar import GrammarProcessor

        return GrammarProcessor
    if name == "MonitorProcessor":
        from codedec.processors.monitor import MonitorProcessor

        return MonitorProcessor
    if name == "RPGProcessor":
        from codedec.processors.rpg import RPGProcessor

        return RPGProcessor
    raise AttributeError(name)
