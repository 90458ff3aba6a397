"""Prompt context: FIM assembly within a token budget (``fim``) and token healing (``healing``)."""
