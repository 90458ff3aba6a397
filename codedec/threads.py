"""How many torch threads a request should use, from how busy the machine is right now.

On a small machine shared with other work (the 2-core machines we run on, a laptop compiling
in the background), torch's default of one thread per core collapses: beside one busy process,
2 threads prefill 1.9x and decode 2.6x slower than 1 thread (``benchmarks/bench_threads.py``),
because each op waits for its slowest thread and that one shares a core. So before each
request the service asks :class:`ThreadPolicy` how many cores the *other* processes used since
the last look — busy CPU time from ``/proc/stat`` minus this process's own CPU time — and uses
the cores left (at least 1, at most ``max_threads``).

What it is not: a scheduler. It never changes a running forward's threads; the service applies
the answer between requests (``torch.set_num_threads``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MIN_WINDOW_S = 0.2  # a shorter window keeps the previous answer (too noisy to decide on)
BUSY_CORE = 0.5  # other processes using at least this much of a core take that core


def read_proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:8]]  # user nice system idle iowait irq softirq
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks) / hz
    idle = (ticks[3] + ticks[4]) / hz
    return total - idle, total


class ThreadPolicy:
    """``choose()``: the number of threads for the next request (see the module docstring).

    ``max_threads`` defaults to the cores this process may run on. The clock, the machine's
    CPU counters and this process's CPU time are injectable for tests.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        *,
        machine: Callable[[], tuple[float, float] | None] = read_proc_stat,
        own_cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.max_threads = max(1, max_threads or cores)
        self._machine, self._own, self._clock = machine, own_cpu, clock
        self._last = self._sample()
        self.threads = self.max_threads
        self.others_cores = 0.0  # cores the other processes used in the last window

    def _sample(self) -> tuple[float, float, float, float] | None:
        counters = self._machine()
        if counters is None:
            return None
        return self._clock(), counters[0], counters[1], self._own()

    def choose(self) -> int:
        """Threads for the next request; updates ``others_cores``."""
        now = self._sample()
        if now is None or self._last is None:
            return self.threads
        wall = now[0] - self._last[0]
        if wall < MIN_WINDOW_S:
            return self.threads
        total = now[2] - self._last[2]
        if total <= 0:
            return self.threads
        machine_cores = total / wall  # all cores' time per second of wall time
        busy_cores = (now[1] - self._last[1]) / wall
        own_cores = (now[3] - self._last[3]) / wall
        self.others_cores = max(0.0, busy_cores - own_cores)
        self._last = now
        taken = int(self.others_cores + (1 - BUSY_CORE))  # round half up
        free = int(round(machine_cores)) - taken
        self.threads = max(1, min(self.max_threads, free))
        return self.threads
