"""Fair under load: long prefills of different documents interleave at chunk boundaries, clients
are served round-robin, and a preempted generation resumes exactly where it stopped."""

from __future__ import annotations

import threading

import pytest

from codedec import forward
from codedec.engine import Engine
from codedec.sampling import SamplingParams
from codedec.service import CompletionRequest, CompletionService

LONG = "".join(f"def function_{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(120))
SHORT = "def add(a, b):\n    return"


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(forward, "PREFILL_CHUNK", 64)


def test_preempted_generation_resumes_with_identical_output(tiny, small_chunks):
    engine = Engine(tiny)
    ids = tiny.tokenizer.encode(LONG, add_special_tokens=False)
    assert len(ids) > 4 * forward.PREFILL_CHUNK
    params = SamplingParams(max_new_tokens=8)
    whole = [t for s in engine.generate(ids, params, session="ref") for t in s.token_ids]

    asked = [0]

    def preempt() -> bool:
        asked[0] += 1
        return asked[0] <= 3  # yield three times, then run to the end

    steps, cache = [], engine.session_cache("p")
    for attempt in range(4):
        steps = list(engine.generate(ids, params, session="p", preempt=preempt))
        if steps[-1].finish_reason != "preempted":
            break
        assert steps[-1].token_ids == [] and len(cache) == (attempt + 1) * forward.PREFILL_CHUNK
    assert attempt == 3 and asked[0] >= 4
    assert steps[-1].metrics.reused_tokens == 3 * forward.PREFILL_CHUNK  # resumed, not re-encoded
    assert [t for s in steps for t in s.token_ids] == whole


def _blocker(service: CompletionService, gate: threading.Event) -> list[str]:
    """Occupy the worker until ``gate`` opens, so the next requests queue up together; returns the
    list of request ids in the order the worker takes them (each turn of a preempted one)."""
    started, real, taken = threading.Event(), service._generate, []

    def generate(request, *args):
        taken.append(request.id)
        if request.doc == "blocker":
            started.set()
            gate.wait(30)
        return real(request, *args)

    service._generate = generate
    service.submit(CompletionRequest(id="blocker", doc="blocker", prefix=SHORT, max_tokens=2))
    assert started.wait(30)
    return taken


def test_a_short_request_does_not_wait_behind_a_long_prefill(tiny, small_chunks):
    service = CompletionService(Engine(tiny))
    try:
        alone = service.complete(CompletionRequest(id="ref", doc="ref", prefix=LONG, max_tokens=6,
                                                   time_budget_ms=None), timeout=60)
        gate, order = threading.Event(), []
        _blocker(service, gate)
        long_fut = service.submit(CompletionRequest(id="long", doc="long", prefix=LONG, max_tokens=6,
                                                    time_budget_ms=None))
        short_fut = service.submit(CompletionRequest(id="short", doc="short", prefix=SHORT, max_tokens=6,
                                                     time_budget_ms=None))
        long_fut.add_done_callback(lambda _: order.append("long"))
        short_fut.add_done_callback(lambda _: order.append("short"))
        gate.set()
        long_result, short_result = long_fut.result(60), short_fut.result(60)
        assert order == ["short", "long"]
        assert long_result.stats["preemptions"] >= 1 and short_result.stats["preemptions"] == 0
        assert long_result.raw_text == alone.raw_text and long_result.token_ids == alone.token_ids
    finally:
        service.close()


def test_clients_are_served_round_robin(tiny):
    service = CompletionService(Engine(tiny))
    try:
        gate = threading.Event()
        taken = _blocker(service, gate)

        def request(id_: str, client: str):
            return CompletionRequest(id=id_, doc=f"doc-{id_}", client=client, prefix=SHORT, max_tokens=2)

        futures = [service.submit(request(f"x{i}", "x")) for i in range(3)]
        futures.append(service.submit(request("y0", "y")))
        gate.set()
        for f in futures:
            f.result(60)
        assert taken == ["blocker", "x0", "y0", "x1", "x2"]  # y's request does not wait for all of x's
    finally:
        service.close()


def test_the_time_budget_counts_from_submission(tiny):
    """The user waits from the keystroke: time spent queued counts against the budget."""
    import time

    service = CompletionService(Engine(tiny))
    try:
        gate = threading.Event()
        _blocker(service, gate)
        fut = service.submit(CompletionRequest(id="budget", doc="b", prefix=SHORT, max_tokens=4,
                                               time_budget_ms=400))
        time.sleep(0.6)  # queued behind the blocker longer than its whole budget
        gate.set()
        result = fut.result(60)
        assert result.finish_reason == "time" and result.token_ids == [] and result.text == ""
        assert service.complete(CompletionRequest(id="fresh", doc="b", prefix=SHORT, max_tokens=4,
                                                  time_budget_ms=400), 60).finish_reason != "time"
    finally:
        service.close()


def test_prefill_chunks_shrink_toward_the_deadline(tiny):
    import time

    model = tiny.model
    forward._SPEED[model] = 2.0  # learned: 2 ms per token
    try:
        soon = time.perf_counter() + 0.3  # 300 ms left: 150 tokens fit
        assert forward._chunk_before(model, soon, 512) in range(140, 151)
        assert forward._chunk_before(model, time.perf_counter() - 1, 512) == forward.MIN_CHUNK  # spent
        assert forward._chunk_before(model, time.perf_counter() + 60, 512) == 512  # plenty of time
        assert forward._chunk_before(model, None, 512) == 512  # no budget
    finally:
        forward._SPEED.pop(model, None)
