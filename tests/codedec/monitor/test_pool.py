"""The language-server pool: one per workspace root, bounded, idle ones shut down, failed starts
back off. A command that exits at once stands in for a server (no jedi start needed)."""

from __future__ import annotations

import sys
import time

import pytest

from codedec.monitor import client as pool
from codedec.monitor.client import MonitorClient, monitor_for, reap_idle

FAILS = (sys.executable, "-c", "import sys; sys.exit(3)")


@pytest.fixture(autouse=True)
def clean_pool():
    pool.close_all()
    yield
    pool.close_all()


def test_one_server_per_root_and_the_pool_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "MAX_SERVERS", 2)
    roots = [tmp_path / f"w{i}" for i in range(3)]
    for r in roots:
        r.mkdir()
    a = monitor_for(roots[0], FAILS)
    assert monitor_for(roots[0], FAILS) is a  # shared per root
    b = monitor_for(roots[1], FAILS)
    monitor_for(roots[0], FAILS)  # a is now the most recently used
    c = monitor_for(roots[2], FAILS)
    assert b.closed and not a.closed and not c.closed  # the least recently used went
    assert len(pool._CLIENTS) == 2


def test_idle_servers_are_shut_down(tmp_path, monkeypatch):
    a = monitor_for(tmp_path, FAILS)
    assert reap_idle() == 0 and not a.closed
    assert reap_idle(now=time.monotonic() + pool.IDLE_S + 1) == 1
    assert a.closed and not pool._CLIENTS
    assert monitor_for(tmp_path, FAILS) is not a  # the next use starts a fresh one


def test_failed_starts_back_off(tmp_path):
    c = MonitorClient(tmp_path, FAILS, start_timeout_s=5, restart_interval_s=1.0)
    try:
        assert not c.start(wait=True)
        assert c.restart_delay() == 1.0
        assert not c.start(wait=True)  # the second start learns that the first failed
        assert c.failures == 1 and c.restart_delay() == 2.0
        assert not c.start(wait=True)
        assert c.failures == 2 and c.restart_delay() == 4.0
    finally:
        c.close()
