"""Logits processors: the protocol (``base``), small real processors (``basic``), token healing
(``healing``). Code-aware processors (grammar, monitor, rpg) join here as files of their own."""

from codedec.processors.base import LogitsProcessor, ProcessorChain, StatefulProcessor
from codedec.processors.basic import BannedTokens, MinNewTokens
from codedec.processors.healing import HealingProcessor

__all__ = [
    "BannedTokens",
    "HealingProcessor",
    "LogitsProcessor",
    "MinNewTokens",
    "ProcessorChain",
    "StatefulProcessor",
]
