"""A hostile suite for the sandbox: completions that attack the harness, and host-side traps.

Each :class:`HostileCase` is a completion of HumanEval/0 whose body does something a
generated program must not get away with (read secrets, write outside, leave files or
processes behind, fill the disk, reach a socket, fork or memory bombs, sleep forever,
kill its parent, exit 0 before the checks). :func:`run_suite` sets traps on the host (a
root-only canary file, a secret in the harness's environment, TCP / UNIX / abstract
listeners, paths outside the work dir), runs every case through
:func:`codedec_eval.sandbox.run_program` exactly as ``codedec eval`` runs a completion, and
checks on the host that nothing got through. A case is *contained* when every check
holds; it must also be scored as a failure (``status != "passed"``).

Used by ``tests/eval/test_sandbox_hostile.py`` and ``benchmarks/sandbox_hostile.py``
(the table in RESULTS.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from codedec_eval.humaneval import load_humaneval
from codedec_eval.isolation import sandbox_process_count
from codedec_eval.sandbox import SandboxResult, run_program

_MB = 2**20


@dataclass(frozen=True)
class HostileCase:
    """``body``: statements at function-body indentation (``$names`` filled from the traps)."""

    name: str
    what: str
    body: str
    limits: dict[str, Any] = field(default_factory=dict)
    settle_s: float = 0.0  # wait this long after the run before checking (delayed writes)


CASES: tuple[HostileCase, ...] = (
    HostileCase("read_secrets", "read /etc/shadow, a root-only canary (also via /proc/1/root), other "
                "processes' environments", """\
    import glob, os
    got = []
    for path in ["/etc/shadow", "$canary", "/proc/1/root$canary"] + glob.glob("/proc/*/environ"):
        try:
            got.append(open(path, "rb").read()[:300])
        except OSError as exc:
            got.append(repr(exc).encode())
    print(got)
"""),
    HostileCase("host_proc", "list the host's processes and the harness's command line", """\
    import os
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    print("HOSTILE procs", len(pids))
    try:
        print(open("/proc/$harness_pid/cmdline", "rb").read())
    except OSError as exc:
        print(exc)
"""),
    HostileCase("write_outside", "write files outside the work dir (/, /etc, /usr, /tmp, /var/tmp, "
                "/dev/shm, the harness's directory)", """\
    for path in $outside:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            print("wrote", path)
        except OSError as exc:
            print(path, exc)
"""),
    HostileCase("leave_files", "a detached daemon that writes files after the run ends", """\
    import os, subprocess, time
    subprocess.Popen(["/bin/sh", "-c", "sleep 1; for p in $outside_sh; do echo late > $$p; done"],
                     start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1)
            for path in $outside:
                try:
                    open(path, "w").write("late")
                except OSError:
                    pass
        os._exit(0)
""", settle_s=1.5),
    HostileCase("fill_disk", "write until the disk is full (work dir, /tmp, /dev/shm)", """\
    import os
    total = 0
    for base in (".", "/tmp", "/dev/shm"):
        try:
            for i in range(10000):
                with open(os.path.join(base, f"fill{i}"), "wb") as f:
                    for _ in range(8):
                        f.write(b"x" * 2**20)
                        total += 2**20
        except OSError as exc:
            print(base, exc)
    print("HOSTILE wrote", total)
""", limits={"timeout_s": 20}),
    HostileCase("open_socket", "connect to the harness's TCP, UNIX-path and abstract sockets, and outside",
                """\
    import socket
    for family, addr in [(socket.AF_INET, ("127.0.0.1", $tcp_port)), (socket.AF_UNIX, "$unix_path"),
                         (socket.AF_UNIX, "\\0$abstract"), (socket.AF_INET, ("1.1.1.1", 53))]:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(addr)
            s.sendall(b"escaped")
            print("connected", addr)
        except OSError as exc:
            print(addr, exc)
        finally:
            s.close()
"""),
    HostileCase("fork_bomb", "fork until refused, forever", """\
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
""", limits={"timeout_s": 2, "max_procs": 16}),
    HostileCase("memory_bomb", "allocate until refused", """\
    chunks = []
    while True:
        chunks.append(bytearray(64 * 2**20))
""", limits={"memory_mb": 512}),
    HostileCase("sleep_forever", "sleep without end", """\
    import time
    time.sleep(10**6)
""", limits={"timeout_s": 1}),
    HostileCase("kill_parent", "SIGKILL its parent, init, every process it can, and the harness by pid", """\
    import os, signal
    for pid in (os.getppid(), 1, $harness_pid, -1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            print(pid, exc)
"""),
    HostileCase("sys_exit_0", "sys.exit(0) before the tests run", """\
    import sys
    sys.exit(0)
"""),
    HostileCase("os_exit_0", "os._exit(0) before the tests run", """\
    import os
    os._exit(0)
"""),
)


@dataclass
class Outcome:
    """One case: how the sandbox scored it and whether the host checks held."""

    case: str
    status: str
    detail: str
    contained: bool
    breaches: list[str]
    wall_ms: float
    peak_procs: int

    @property
    def ok(self) -> bool:
        return self.contained and self.status != "passed"


@dataclass
class _Traps:
    dir: str
    canary: str
    canary_secret: str
    env_secret: str
    outside: list[str]
    tcp: socket.socket
    unix: socket.socket
    abstract_name: str
    abstract: socket.socket
    shadow_line: str | None  # the first line of the host's /etc/shadow, when the harness can read it

    def values(self) -> dict[str, str]:
        return {"canary": self.canary, "harness_pid": str(os.getpid()), "outside": repr(self.outside),
                "outside_sh": " ".join(self.outside), "tcp_port": str(self.tcp.getsockname()[1]),
                "unix_path": self.unix.getsockname(), "abstract": self.abstract_name}

    def leaked(self, text: str) -> list[str]:
        found = []
        if self.canary_secret in text:
            found.append("canary file content in the output")
        if self.env_secret in text:
            found.append("the harness's environment in the output")
        if self.shadow_line and self.shadow_line in text:
            found.append("/etc/shadow content in the output")
        return found

    def breaches(self) -> list[str]:
        found = [f"file outside the work dir: {p}" for p in self.outside if os.path.lexists(p)]
        for name, sock in (("TCP", self.tcp), ("UNIX", self.unix), ("abstract", self.abstract)):
            try:
                conn, _ = sock.accept()
                conn.close()
                found.append(f"a connection reached the harness's {name} socket")
            except (TimeoutError, BlockingIOError):
                pass
        return found

    def clean(self) -> None:
        for p in self.outside:
            try:
                os.unlink(p)
            except OSError:
                pass


@contextmanager
def _traps() -> Iterator[_Traps]:
    tag = secrets.token_hex(6)
    root = tempfile.mkdtemp(prefix="codedec-hostile-")
    canary_secret, env_secret = f"canary-{secrets.token_hex(8)}", f"envsecret-{secrets.token_hex(8)}"
    canary = os.path.join(root, "canary")
    fd = os.open(canary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, canary_secret.encode())
    os.close(fd)
    outside = [f"/codedec-hostile-{tag}", f"/etc/codedec-hostile-{tag}", f"/usr/codedec-hostile-{tag}",
               f"/tmp/codedec-hostile-{tag}", f"/var/tmp/codedec-hostile-{tag}",
               f"/dev/shm/codedec-hostile-{tag}", os.path.join(root, "escaped")]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(os.path.join(root, "harness.sock"))
    os.chmod(os.path.join(root, "harness.sock"), 0o777)
    abstract_name = f"codedec-hostile-{tag}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    for sock in (tcp, unix, abstract):
        sock.listen(8)
        sock.setblocking(False)
    old_env = os.environ.get("CODEDEC_HOSTILE_SECRET")
    os.environ["CODEDEC_HOSTILE_SECRET"] = env_secret
    try:
        shadow_line: str | None = Path("/etc/shadow").read_text().splitlines()[0]
    except (OSError, IndexError):
        shadow_line = None
    traps = _Traps(root, canary, canary_secret, env_secret, outside, tcp, unix, abstract_name, abstract,
                   shadow_line)
    try:
        yield traps
    finally:
        if old_env is None:
            os.environ.pop("CODEDEC_HOSTILE_SECRET", None)
        else:
            os.environ["CODEDEC_HOSTILE_SECRET"] = old_env
        for sock in (tcp, unix, abstract):
            sock.close()
        traps.clean()
        shutil.rmtree(root, ignore_errors=True)


def _free_mb(path: str) -> float:
    return shutil.disk_usage(path).free / _MB


def _reported(stdout: str, disk_mb: int) -> list[str]:
    """Breaches the program reports itself (``HOSTILE procs N``, ``HOSTILE wrote BYTES``)."""
    found = []
    for line in stdout.splitlines():
        words = line.split()
        if words[:2] == ["HOSTILE", "procs"] and int(words[2]) > 8:
            found.append(f"saw {words[2]} processes: the host's /proc")
        if words[:2] == ["HOSTILE", "wrote"] and int(words[2]) > 3 * (disk_mb + 8) * _MB:
            found.append(f"wrote {int(words[2]) // _MB} MB, over the quota of 3 x {disk_mb} MB")
    return found


def program_for(case: HostileCase, values: dict[str, str]) -> str:
    """HumanEval/0 completed by ``case``'s body (then a wrong ``return``), with its tests."""
    problem = load_humaneval()[0]
    completion = Template(case.body).substitute(values) + "    return None\n"
    return problem.program(completion)


@contextmanager
def peak_processes() -> Iterator[list[int]]:
    """While inside, sample the number of live sandbox processes every 20 ms; ``[peak]``."""
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sandbox_process_count())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield peak
    finally:
        stop.set()
        watcher.join()


def run_case(case: HostileCase, traps: _Traps, *, timeout_s: float = 10.0) -> Outcome:
    """Run one case under the traps; the peak number of sandbox processes is sampled meanwhile."""
    limits = {"timeout_s": timeout_s, **case.limits}
    free_before = {p: _free_mb(p) for p in ("/", "/tmp", "/dev/shm") if os.path.isdir(p)}
    with peak_processes() as peak:
        result: SandboxResult = run_program(program_for(case, traps.values()), **limits)
    if case.settle_s:
        time.sleep(case.settle_s)
    breaches = traps.leaked(result.stdout_tail + result.stderr_tail) + traps.breaches()
    breaches += _reported(result.stdout_tail, int(limits.get("max_disk_mb", 64)))
    left = sandbox_process_count()
    if left:
        breaches.append(f"{left} sandbox processes still alive after the run")
    for path, before in free_before.items():
        if before - _free_mb(path) > 64:
            breaches.append(f"{path} lost {before - _free_mb(path):.0f} MB of free space")
    max_procs = int(limits.get("max_procs", 32))
    if peak[0] > max_procs + 4:
        breaches.append(f"{peak[0]} processes at once (limit {max_procs})")
    traps.clean()
    return Outcome(case.name, result.status, result.detail, not breaches, breaches, result.wall_ms, peak[0])


def run_suite(cases: Sequence[HostileCase] = CASES, *,
              progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every case in order under one set of traps; ``progress`` is called after each."""
    outcomes = []
    with _traps() as traps:
        for case in cases:
            outcome = run_case(case, traps)
            outcomes.append(outcome)
            if progress:
                progress(outcome)
    return outcomes


def main() -> int:
    """Print the suite's table; exit 1 if any case escaped or scored as a pass."""
    import logging

    from codedec_eval.isolation import probe_isolation

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    print(f"isolation: {probe_isolation(sys.executable).describe()}")
    print("| case | what it tries | status | contained | wall ms | peak procs | detail |")
    print("|---|---|---|---|---|---|---|")
    whats = {c.name: c.what for c in CASES}

    def row(o: Outcome) -> None:
        held = "yes" if o.contained else "NO: " + "; ".join(o.breaches)
        print(f"| {o.case} | {whats[o.case]} | {o.status} | {held} | {o.wall_ms:.0f} | {o.peak_procs} "
              f"| {o.detail} |", flush=True)

    outcomes = run_suite(progress=row)
    bad = [o.case for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} contained and scored as failures"
          + (f"; NOT: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
