"""Run untrusted generated code in a confined subprocess and report how it ended.

The only entry point for executing model output (HumanEval tests, infilling checks).
Nothing here ever ``exec``\\ s code in the harness process. What a run gets:

* where bubblewrap works (:mod:`codedec_eval.isolation`): a read-only view of the system and
  nothing else of the host, a private size-limited work directory, ``/tmp`` and ``/dev/shm``
  (``max_disk_mb`` each), no network, no host ``/proc``, an unprivileged uid without
  capabilities; without it (a loud warning) a private work directory on the host;
* ``python -I`` (isolated mode: no ``PYTHON*`` variables, no user site, no script dir on
  ``sys.path``) with a minimal environment and stdin from ``/dev/null``;
* rlimits: address space (``memory_mb``), CPU seconds (timeout + 1, then SIGKILL), file
  size, no core files, open files, and the number of processes where the kernel enforces it;
* whatever :func:`codedec_eval.isolation.probe_isolation` found to work here: a pids
  cgroup, an unprivileged uid, no network;
* a new session and process group; on timeout, output overflow or normal exit, every
  process of the run (group, session, cgroup) is SIGKILLed, so nothing outlives a run;
* output read through a bounded buffer: only the last ``max_output_bytes`` of each stream
  are kept, and a program whose total output exceeds that is killed.

A run passes only when the program reaches its end: the sandbox appends a line that
writes a per-run random sentinel to stdout, and ``passed`` needs exit status 0 *and* the
sentinel (a ``sys.exit(0)`` or ``os._exit(0)`` before the checks is a failure). The
sentinel is stripped from ``stdout_tail``.

Under bubblewrap it is a real sandbox for the mistakes and mischief of generated code
(reading secrets, writing outside, leaving files, sockets, fork and memory bombs, killing
the harness); it is not hardened against kernel exploits (same kernel, no seccomp filter),
and the sentinel guards against early exits, not against code that reads its own program
file to forge it.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from codedec_eval.isolation import (
    Isolation,
    RunCgroup,
    kill_run,
    launch,
    make_workdir,
    probe_isolation,
    user_process_count,
)
from codedec_eval.sandbox_launcher import SETUP_FAILED, SETUP_MARKER

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "killed", "output_limit", "error"]
_DRAIN_GRACE_S = 0.5  # after the program exits, how long to wait for its pipes to close
_READ_CHUNK = 65536
_HELPERS = 2  # the launcher and its pid-namespace init count against the process limits


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended.

    ``status``: ``passed`` (exit 0 after the last line of the program), ``failed`` (non-zero
    exit: an exception, a failed assert, MemoryError under the address-space limit, a fork
    refused by the process limit; or exit 0 before the end), ``timeout`` (wall-clock limit, or the CPU limit's SIGXCPU), ``killed`` (ended
    by another signal), ``output_limit`` (killed for printing more than allowed), ``error``
    (the sandbox itself could not start the program; not the program's fault).
    ``returncode`` is the exit status (negative: the signal), None if unknown.
    """

    status: Status
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    wall_ms: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class _Tail:
    """The last ``cap`` bytes of a stream, plus how many bytes went through."""

    def __init__(self, cap: int) -> None:
        self.cap, self.total, self.buf = cap, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > self.cap:
            del self.buf[: len(self.buf) - self.cap]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _with_sentinel(code: str, sentinel: str) -> str:
    """``code`` followed by a top-level statement that writes ``sentinel`` on a line of its own."""
    return (f"{code}\n\nimport sys as _codedec_sys\n"
            f"try:\n    _codedec_sys.stdout.flush()\nexcept Exception:\n    pass\n"
            f"_codedec_sys.__stdout__.write('\\n{sentinel}\\n')\n_codedec_sys.__stdout__.flush()\n")


def run_program(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                max_output_bytes: int = 64_000, max_procs: int = 32, max_file_mb: int = 16,
                max_disk_mb: int = 64, python: str | None = None) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and wait at most ``timeout_s`` (+ cleanup).

    1. Probe (once per interpreter) which isolation works; make a workdir and, when
       available, a pids cgroup with ``pids.max = max_procs``.
    2. Start the launcher in a new session; it confines itself and runs ``python -I program.py``
       under its supervision (:mod:`codedec_eval.sandbox_launcher`).
    3. Read stdout/stderr without blocking into bounded tails until both close and the
       program has exited, or the deadline passes, or the output exceeds the cap.
    4. Kill everything that belongs to the run, reap, remove the cgroup and the workdir.

    ``wall_ms`` runs from the launch to the program's end (interpreter start-up included,
    about 30-60 ms; bubblewrap adds about 10 ms). ``max_disk_mb`` bounds each private tmpfs
    under bubblewrap. Safe to call from several threads at once. Raises ValueError for
    non-positive limits; every outcome of the program is a result.
    """
    if min(timeout_s, memory_mb, max_output_bytes, max_procs, max_file_mb, max_disk_mb) <= 0:
        raise ValueError(f"sandbox limits must be positive: timeout_s={timeout_s} memory_mb={memory_mb} "
                         f"max_output_bytes={max_output_bytes} max_procs={max_procs} max_file_mb={max_file_mb} "
                         f"max_disk_mb={max_disk_mb}")
    python = python or sys.executable
    iso = probe_isolation(python)
    workdir = make_workdir(iso)
    cgroup: RunCgroup | None = None
    proc: subprocess.Popen[bytes] | None = None
    start = time.monotonic()
    try:
        program = os.path.join(workdir, "program.py")
        sentinel = f"codedec-sandbox-done-{secrets.token_hex(16)}"
        Path(program).write_text(_with_sentinel(code, sentinel), encoding="utf-8")
        if iso.pids_cgroup:
            cgroup = RunCgroup.create(iso.pids_cgroup, max_procs + _HELPERS)
        rlimits = _rlimits(iso, timeout_s, memory_mb, max_procs, max_file_mb)
        start = time.monotonic()
        proc = launch(python, program, workdir, iso, rlimits, cgroup, disk_mb=max_disk_mb)
        out, err = _Tail(max_output_bytes), _Tail(max_output_bytes)
        reason, end = _pump(proc, start + timeout_s, out, err, max_output_bytes,
                            lambda: _kill_run(proc, cgroup))
        wall_ms = (end - start) * 1000.0
        _kill_run(proc, cgroup)
        _reap(proc)
        rc = proc.returncode
        if iso.bwrap and rc is not None and rc > 128 and rc - 128 in signal.valid_signals():
            rc = 128 - rc  # bubblewrap ends with 128 + N when the program died of signal N
        stdout, finished = _strip_sentinel(out.text(), sentinel)
        return _judge(reason, rc, stdout, err.text(), wall_ms, timeout_s, max_output_bytes, finished)
    except OSError as exc:
        log.warning("sandbox could not run the program: %s", exc)
        return SandboxResult("error", None, "", "", (time.monotonic() - start) * 1000.0, f"sandbox: {exc}")
    finally:
        if proc is not None and proc.returncode is None:  # an exception on the way: clean up anyway
            _kill_run(proc, cgroup)
            _reap(proc)
        if cgroup is not None:
            cgroup.remove()
        _rmtree(workdir)


def _rlimits(iso: Isolation, timeout_s: float, memory_mb: int, max_procs: int,
             max_file_mb: int) -> dict[str, tuple[int, int]]:
    cpu = math.ceil(timeout_s) + 1
    limits = {
        "RLIMIT_AS": (memory_mb << 20, memory_mb << 20),
        "RLIMIT_CPU": (cpu, cpu + 1),  # soft: SIGXCPU, hard: SIGKILL
        "RLIMIT_FSIZE": (max_file_mb << 20, max_file_mb << 20),
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_NOFILE": (256, 256),
    }
    if iso.pids_cgroup:  # per-run limit already; RLIMIT_NPROC would be shared by concurrent runs
        pass
    elif iso.drop_uid is not None:
        limits["RLIMIT_NPROC"] = (max_procs + _HELPERS, max_procs + _HELPERS)
    elif os.geteuid() != 0:  # the limit counts all processes of the user
        n = user_process_count() + max_procs + _HELPERS
        limits["RLIMIT_NPROC"] = (n, n)
    return limits


def _pump(proc: subprocess.Popen[bytes], deadline: float, out: _Tail, err: _Tail, cap: int,
          on_exit: Callable[[], None]) -> tuple[str | None, float]:
    """Read both pipes until done; returns (``"timeout"`` | ``"output_limit"`` | None, end time)."""
    assert proc.stdout is not None and proc.stderr is not None
    tails = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    sel = selectors.DefaultSelector()
    for fd in tails:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    end: float | None = None
    try:
        while True:
            now = time.monotonic()
            if end is None and _exited(proc):
                end = now
                on_exit()  # descendants must not outlive the program
            if not sel.get_map():
                if end is not None:
                    return None, end
                if now >= deadline:
                    return "timeout", now
                time.sleep(min(0.01, deadline - now))  # output closed, program still running
                continue
            wait_until = end + _DRAIN_GRACE_S if end is not None else deadline
            if now >= wait_until:
                return (None, end) if end is not None else ("timeout", now)
            for key, _ in sel.select(min(wait_until - now, 0.05)):
                try:
                    chunk = os.read(key.fd, _READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                tails[key.fd].add(chunk)
                if out.total + err.total > cap:
                    return "output_limit", time.monotonic()
    finally:
        sel.close()


def _strip_sentinel(stdout: str, sentinel: str) -> tuple[str, bool]:
    line = f"\n{sentinel}\n"
    return stdout.replace(line, ""), line in stdout


def _judge(reason: str | None, rc: int | None, stdout: str, stderr: str, wall_ms: float,
           timeout_s: float, cap: int, finished: bool) -> SandboxResult:
    def result(status: Status, detail: str = "") -> SandboxResult:
        return SandboxResult(status, rc, stdout, stderr, wall_ms, detail)

    if reason == "timeout":
        return result("timeout", f"wall-clock limit of {timeout_s:g} s")
    if reason == "output_limit":
        return result("output_limit", f"more than {cap} bytes of output")
    if rc == SETUP_FAILED and SETUP_MARKER in stderr:
        return result("error", stderr.split(SETUP_MARKER, 1)[1].strip())
    if rc == 1 and stderr.startswith("bwrap: "):
        return result("error", stderr.strip())
    if rc == 0:
        if finished:
            return result("passed")
        return result("failed", "exit status 0 before the end of the program (sys.exit or os._exit)")
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc) if -rc in signal.valid_signals() else None
        if sig == signal.SIGXCPU:
            return result("timeout", "CPU-time limit (SIGXCPU)")
        return result("killed", f"signal {sig.name if sig else -rc}")
    return result("failed", f"exit status {rc}")


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Has the launcher ended? Checked *without reaping* it: while it is an unreaped zombie
    its pid (and its session and group ids) cannot be reused, so killing by those ids can
    never hit an unrelated process."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind our back
        return True


def _kill_run(proc: subprocess.Popen[bytes], cgroup: RunCgroup | None) -> None:
    """SIGKILL every process of the run: the launcher's subtree, its session, its cgroup.

    Called only while the launcher is unreaped (see :func:`_exited`). The launcher goes
    last, so that it is still there to adopt (and we to find) whatever its descendants
    leave behind, and so that it reaps its pid-namespace init: killing both at once would
    leave the init as a zombie for the machine's pid 1 to reap (which it may do slowly, or
    never in a container), and zombies count against the process limits.
    """
    if proc.returncode is not None:  # reaped: its ids may be reused; only the cgroup is safe
        if cgroup is not None:
            cgroup.kill_all()
        return
    if not _exited(proc):
        kill_run(proc.pid, spare_root=True)
        if cgroup is not None:
            cgroup.kill_all(spare=proc.pid)
        deadline = time.monotonic() + 0.5
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.005)
    kill_run(proc.pid, spare_root=False)
    if cgroup is not None:
        cgroup.kill_all()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # stuck in the kernel (D state); never block the harness on it
        log.warning("sandboxed process %d did not die after SIGKILL", proc.pid)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _rmtree(path: str) -> None:
    """Delete the workdir even if the program removed permissions inside it."""
    def fix(func: object, p: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)
