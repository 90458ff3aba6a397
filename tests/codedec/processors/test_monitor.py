"""The monitor (MGD) processor: triggers, name masks, time-boxing, life cycle — with a fake
language server (deterministic) and once with jedi-language-server."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
import torch
from protocol_checks import assert_draft_rows_match_sequential, assert_fork_and_rollback_leave_no_trace

from codedec.decoding import ComponentContext, TextContext, build_processors
from codedec.processors.monitor import MonitorConfig, MonitorProcessor
from codedec.vocab import vocab_for


class FakeServer:
    """Answers every request with ``names`` (after ``release`` is set, if given)."""

    def __init__(self, names, release: threading.Event | None = None) -> None:
        self.names, self.release, self.requests = list(names), release, []

    def request(self, path, text, offset):
        self.requests.append((path, text[:offset]))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.release is None:
            fut.set_result(self.names)
        else:
            threading.Thread(target=lambda: (self.release.wait(5), fut.set_result(self.names)), daemon=True).start()
        return fut


@pytest.fixture(scope="module")
def vocab(tiny):
    return vocab_for(tiny.tokenizer)


def enc(tiny, text):
    return tiny.tokenizer.encode(text, add_special_tokens=False)


def allowed_texts(proc, vocab) -> set[bytes]:
    row = proc(torch.zeros(1, len(vocab)))[0]
    return {vocab.token_bytes[i] for i in torch.isfinite(row).nonzero().flatten().tolist()}


def make(tiny, vocab, prefix, names=("append", "appendleft", "pop"), **kw):
    server = FakeServer(names, kw.pop("release", None))
    proc = MonitorProcessor(vocab, tiny.stop_token_ids, prefix, "", None, MonitorConfig(**kw), client=server)
    return proc, server


def test_member_access_masks_to_valid_names(tiny, vocab):
    proc, server = make(tiny, vocab, "items = []\nitems.")
    assert proc.trigger() is not None
    ok = allowed_texts(proc, vocab)
    assert ok and all(b"append".startswith(t) or b"appendleft".startswith(t) or b"pop".startswith(t) for t in ok)
    assert server.requests and server.requests[0][1].endswith("items.")
    proc.advance(enc(tiny, "app"))
    ok = allowed_texts(proc, vocab)
    assert ok and all(b"end".startswith(t) or b"endleft".startswith(t) for t in ok)
    proc.advance(enc(tiny, "end"))  # "append" is complete: anything that ends a name, or goes on
    ok = allowed_texts(proc, vocab)
    assert b"(" in ok and b"l" in ok and b"x" not in ok
    proc.advance(enc(tiny, "("))
    assert proc.trigger() is None
    assert len(server.requests) == 1  # one query per trigger


def test_member_access_inside_an_f_string_field(tiny, vocab):
    """``f"{obj.`` is code (3 of the 40 typed cases of the E13 table were there); the rest of
    the string is not, and neither is a plain string's ``{obj.``."""
    proc, server = make(tiny, vocab, 'items = []\nmsg = f"{len(items)} items, last {items.')
    assert proc.trigger() is not None
    ok = allowed_texts(proc, vocab)
    assert ok and all(b"append".startswith(t) or b"appendleft".startswith(t) or b"pop".startswith(t) for t in ok)
    assert server.requests[0][1].endswith("{items.")
    proc.advance(enc(tiny, "pop()} and "))  # the field closed: literal text again
    assert proc.trigger() is None and not proc.receiver_at_end()
    proc.advance(enc(tiny, "{items"))  # a new field: a dot may come
    assert proc.receiver_at_end()
    for prefix in ('msg = "{items.', 'msg = f"{{items.', 'msg = f"{items!r:>{width}.'):
        proc, server = make(tiny, vocab, prefix)
        assert proc.trigger() is None and torch.isfinite(proc(torch.zeros(1, len(vocab)))).all(), prefix


def test_from_import_and_no_trigger_in_strings(tiny, vocab):
    proc, _ = make(tiny, vocab, "from collections import ", names=("deque", "OrderedDict"))
    assert proc.trigger() == (b"", b"")  # right at the cursor, nothing written yet
    proc.advance(enc(tiny, "deque, "))
    assert proc.trigger() is not None
    # after a comma no blank is typed yet: the next name may come with its leading space (BPE
    # " deque"), or a blank first; a line break would end the statement here
    proc, _ = make(tiny, vocab, "from collections import OrderedDict,", names=("deque", "OrderedDict"))
    ok = allowed_texts(proc, vocab)
    assert b" " in ok and any(t.startswith(b" ") and len(t) > 1 for t in ok)
    names = (b"deque", b"OrderedDict", b" deque", b" OrderedDict")
    assert all(not t.strip(b" \t") or any(n.startswith(t) for n in names) for t in ok)
    assert not any(b"\n" in t for t in ok)
    proc, _ = make(tiny, vocab, "from collections import (\n", names=("deque",))
    ok = allowed_texts(proc, vocab)
    assert any(b"\n" in t and not t.strip() for t in ok) and b"x" not in ok  # inside brackets it may
    proc, _ = make(tiny, vocab, "s = 'items.")
    assert proc.trigger() is None
    proc, _ = make(tiny, vocab, "x = 1.")
    assert proc.trigger() is None


def test_dot_tokens_are_checked_one_step_early(tiny, vocab):
    proc, server = make(tiny, vocab, "items = []\nitems", names=("append", "pop"))
    assert proc.trigger() is None and proc.receiver_at_end()
    dots = [i for i, b in enumerate(vocab.token_bytes) if b.startswith(b".") and i not in vocab.special]
    logits = torch.zeros(1, len(vocab))
    logits[0, dots] = 5.0  # the model wants a dot
    row = proc(logits)[0]
    ok = {vocab.token_bytes[i] for i in dots if torch.isfinite(row[i])}
    assert b"." in ok and all(b"append".startswith(t[1:]) or b"pop".startswith(t[1:]) for t in ok)
    assert torch.isfinite(row[enc(tiny, " =")[0]])  # tokens without a dot are left alone
    assert server.requests[0][1].endswith("items.")
    unlikely = torch.zeros(1, len(vocab))
    unlikely[0, dots] = -10.0  # no dot in sight: no mask
    assert torch.isfinite(proc(unlikely)).all() and len(server.requests) == 1


def test_late_answer_is_used_when_it_arrives(tiny, vocab):
    release = threading.Event()
    proc, _ = make(tiny, vocab, "items.", release=release, budget_ms=10)
    logits = torch.zeros(1, len(vocab))
    assert torch.equal(proc(logits), logits)  # no answer within the budget: unconstrained
    release.set()
    for _ in range(100):
        if proc._answers and all(f.done() for f in next(iter(proc._answers.values()))):
            break
        threading.Event().wait(0.02)
    assert not torch.equal(proc(logits), logits)
    assert proc.stats["late"] == 1


def test_empty_or_diverged_answers_leave_the_row_alone(tiny, vocab):
    logits = torch.randn(1, len(vocab))
    proc, _ = make(tiny, vocab, "x.", names=())
    assert torch.equal(proc(logits), logits)
    proc, _ = make(tiny, vocab, "x.", names=("pop",))
    proc.advance(enc(tiny, "zz"))  # already off the valid names
    assert torch.equal(proc(logits), logits)


def test_fork_rollback_and_draft_rows_leave_no_trace(tiny, vocab):
    proc, _ = make(tiny, vocab, "items.")
    logits = torch.randn(1, len(vocab))
    before = proc(logits)
    ids = enc(tiny, "append(1)")
    assert_fork_and_rollback_leave_no_trace(proc, logits, ids)
    assert_draft_rows_match_sequential(proc, torch.randn(len(ids) + 1, len(vocab)), ids)
    assert torch.equal(proc(logits), before)
    proc.reset()
    assert bytes(proc.lexer.buf) == proc.region


def test_with_jedi_language_server(tiny, vocab, tmp_path):
    from codedec.monitor import MonitorClient

    client = MonitorClient(tmp_path)
    try:
        if not client.start(wait=True):
            pytest.skip("jedi-language-server did not start")
        proc = MonitorProcessor(vocab, tiny.stop_token_ids, "import os\nx = os.", "\n", str(tmp_path / "m.py"),
                                MonitorConfig(budget_ms=20000), client=client)
        ok = allowed_texts(proc, vocab)
        assert b"p" in ok and b"q" not in ok  # os.path / os.pipe ...; no os.q*
    finally:
        client.close()


def test_registered_by_name(tiny, vocab):
    ctx = ComponentContext(vocab, tiny.stop_token_ids, TextContext("x.", ""), tiny.tokenizer)
    (proc,) = build_processors(["monitor"], ctx)
    assert isinstance(proc, MonitorProcessor)
    proc.client = FakeServer(["y"])
    assert allowed_texts(proc, vocab) <= {b"y"}
