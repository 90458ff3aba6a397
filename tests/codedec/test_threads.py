"""The thread policy gives the cores other processes leave free (never below 1)."""

from __future__ import annotations

from codedec.threads import ThreadPolicy, read_proc_stat


class FakeMachine:
    """2 cores; ``busy_others``/``busy_own`` cores used per second of wall time."""

    def __init__(self) -> None:
        self.t = self.busy = self.total = self.own = 0.0

    def run(self, seconds: float, others: float, own: float) -> None:
        self.t += seconds
        self.busy += (others + own) * seconds
        self.total += 2 * seconds
        self.own += own * seconds


def policy(m: FakeMachine) -> ThreadPolicy:
    return ThreadPolicy(2, machine=lambda: (m.busy, m.total), own_cpu=lambda: m.own, clock=lambda: m.t)


def test_quiet_machine_uses_every_core():
    m = FakeMachine()
    p = policy(m)
    m.run(1.0, others=0.05, own=1.9)  # our own work never counts as contention
    assert p.choose() == 2


def test_a_cpu_hog_takes_a_core():
    m = FakeMachine()
    p = policy(m)
    m.run(1.0, others=1.0, own=0.9)
    assert p.choose() == 1 and 0.9 < p.others_cores < 1.1
    m.run(1.0, others=2.0, own=0.0)  # fully loaded: still one thread
    assert p.choose() == 1
    m.run(1.0, others=0.2, own=1.0)  # the hog went away
    assert p.choose() == 2


def test_too_short_a_window_keeps_the_last_answer():
    m = FakeMachine()
    p = policy(m)
    m.run(1.0, others=1.0, own=0.0)
    assert p.choose() == 1
    m.run(0.05, others=0.0, own=0.0)
    assert p.choose() == 1


def test_reads_this_machine():
    busy, total = read_proc_stat()
    assert 0 <= busy <= total
    assert 1 <= ThreadPolicy().choose() <= ThreadPolicy().max_threads


def test_the_service_applies_the_policy_per_request(tiny, monkeypatch):
    import torch

    from codedec.engine import Engine
    from codedec.service import CompletionRequest, CompletionService

    monkeypatch.delenv("CODEDEC_THREADS")
    before = torch.get_num_threads()
    service = CompletionService(Engine(tiny))
    try:
        assert service._threads is not None  # adaptive by default
        service._threads.choose = lambda: 1
        seen, apply = [], service._set_threads

        def recorded() -> int:
            n = apply()
            seen.append(torch.get_num_threads())  # on the worker thread: OpenMP's count is per thread
            return n

        service._set_threads = recorded
        result = service.complete(CompletionRequest(id=1, doc="d", prefix="def f():\n", max_tokens=2), timeout=30)
        assert result.stats["threads"] == 1 and seen == [1]
    finally:
        service.close()
    assert torch.get_num_threads() == before  # the caller's thread is untouched
