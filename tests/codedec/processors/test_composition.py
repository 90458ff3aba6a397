"""``grammar,monitor,rpg`` together: registry order, one chain's life cycle, an engine run."""

from __future__ import annotations

import concurrent.futures

import torch
from protocol_checks import assert_draft_rows_match_sequential, assert_fork_and_rollback_leave_no_trace

from codedec.decoding import ComponentContext, TextContext, build_processors, parse_decoding
from codedec.engine import Engine
from codedec.processors import GrammarProcessor, MonitorProcessor, ProcessorChain, RPGProcessor
from codedec.sampling import SamplingParams
from codedec.vocab import vocab_for


class FakeServer:
    def __init__(self, names) -> None:
        self.names = names

    def request(self, path, text, offset):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(self.names)
        return fut


def chain_for(tiny, prefix, suffix="", names=("append", "pop")) -> ProcessorChain:
    vocab = vocab_for(tiny.tokenizer)
    ctx = ComponentContext(vocab, tiny.stop_token_ids, TextContext(prefix, suffix), tiny.tokenizer)
    procs = build_processors(parse_decoding("grammar,monitor,rpg"), ctx)
    for p in procs:
        if isinstance(p, MonitorProcessor):
            p.client = FakeServer(list(names))
    return ProcessorChain(procs)


def test_order_is_soft_first(tiny):
    assert parse_decoding("grammar,monitor,rpg") == ("rpg", "grammar", "monitor")
    chain = chain_for(tiny, "x = 1\n")
    assert [type(p) for p in chain.processors] == [RPGProcessor, GrammarProcessor, MonitorProcessor]


def test_chain_life_cycle_leaves_no_trace(tiny):
    vocab = vocab_for(tiny.tokenizer)
    chain = chain_for(tiny, "items = []\nfor i in range(3):\n    items.")
    ids = tiny.tokenizer.encode("append(i)\n    items.pop()\n", add_special_tokens=False)
    assert_fork_and_rollback_leave_no_trace(chain, torch.randn(1, len(vocab)), ids)
    assert_draft_rows_match_sequential(chain, torch.randn(len(ids) + 1, len(vocab)), ids)


def test_engine_run_with_all_three(tiny):
    engine = Engine(tiny)
    prefix = "items = []\nitems."
    chain = chain_for(tiny, prefix)
    steps = list(engine.generate(
        tiny.tokenizer.encode(prefix, add_special_tokens=False),
        SamplingParams(max_new_tokens=24, temperature=1.0, seed=0),
        processors=chain.processors,
    ))
    text = "".join(s.text for s in steps)
    assert text.startswith(("append", "pop")), text  # the monitor chose the name, the grammar the rest
