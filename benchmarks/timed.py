"""``Timed``: a logits processor wrapper that records its own time (benchmarks only)."""

from __future__ import annotations

import time


class Timed:
    """Wraps a processor; ``times`` holds the seconds of each call + advance."""

    def __init__(self, proc) -> None:
        self.proc, self.times = proc, []

    def __call__(self, logits, draft=()):
        t = time.perf_counter()
        out = self.proc(logits, draft)
        self.times.append(time.perf_counter() - t)
        return out

    def advance(self, ids):
        t = time.perf_counter()
        self.proc.advance(ids)
        self.times[-1] += time.perf_counter() - t

    def rollback(self, n):
        self.proc.rollback(n)

    def fork(self):
        return Timed(self.proc.fork())

    def reset(self):
        self.proc.reset()
