"""``TextView``: grammar, monitor and rpg of one request read one lexer, moved once per token by
the chain; draft rows, fork and rollback stay exact with it shared."""

from __future__ import annotations

import torch
from protocol_checks import assert_draft_rows_match_sequential, assert_fork_and_rollback_leave_no_trace

from codedec.engine import Engine
from codedec.prepare import prepare
from codedec.processors.textview import TextView
from codedec.vocab import vocab_for

PREFIX = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"



def test_code_readers_share_one_lexer_view(tiny):
    """grammar, monitor and rpg built by prepare() read one TextView that the chain moves once per
    token; the chain's draft rows and fork/rollback keep it exact."""
    prepared = prepare(Engine(tiny), PREFIX, "\n", max_tokens=40, decoding="rpg,grammar,monitor")
    chain = prepared.chain
    assert len(chain.views) == 1 and isinstance(chain.views[0], TextView)
    readers = [p for p in chain.processors if type(p).__name__ in ("RPGProcessor", "GrammarProcessor",
                                                                     "MonitorProcessor")]
    assert len(readers) == 3
    assert all(p.view is chain.views[0] and not p.owns_view for p in readers)
    for p in readers:  # the monitor without its language server: the view is what is under test
        if type(p).__name__ == "MonitorProcessor":
            p.active = False
    ids = tiny.tokenizer.encode("        self.items.append(x)\n        return x\n", add_special_tokens=False)
    chain.advance(ids[:3])
    assert chain.views[0].tokens == 3  # moved once, not once per reader
    vocab = vocab_for(tiny.tokenizer)
    logits = torch.randn(len(ids) - 2, len(vocab))
    assert_draft_rows_match_sequential(chain, logits, ids[3:])
    assert_fork_and_rollback_leave_no_trace(chain, logits[:1], ids[3:])
    fork = chain.fork()
    assert fork.views[0] is not chain.views[0]
    assert all(p.view is fork.views[0] for p in fork.processors if hasattr(p, "owns_view") and not p.owns_view)


def test_view_rollback_and_fork(tiny):
    vocab = vocab_for(tiny.tokenizer)
    ids = tiny.tokenizer.encode("x = [1,\n 2]\ny = 3\n", add_special_tokens=False)
    view = TextView(vocab, b"def f():\n    pass\n")
    assert view.base_lines == 2 and view.tokens == 0
    view.advance(ids)
    done = (bytes(view.lexer.buf), list(view.line_counts), len(view.lexer.lexemes))
    fork = view.fork()
    view.rollback(len(ids))
    assert view.generated() == b"" and view.tokens == 0 and len(view.lexer.line_ends) == 2
    view.advance(ids)
    assert (bytes(view.lexer.buf), list(view.line_counts), len(view.lexer.lexemes)) == done
    assert fork.generated() == view.generated() and fork.lexer is not view.lexer
