"""Speculative decoding without a draft model (SuffixDecoding): drafts from suffix indexes over
the prompt, the text around the cursor, earlier completions (``suffix_tree``), verified in one
tree forward (``verify``, the ``suffix`` strategy)."""
