"""Which confinement the sandbox can use on this machine, probed once and cached.

This module is the parent-side half of :mod:`codedec_eval.sandbox_launcher`: it decides
*what* the launcher applies (network namespace, unprivileged uid, pids cgroup), spawns it,
and knows how to find and kill everything a program started. It does not read output or
judge results; :mod:`codedec_eval.sandbox` does.

Bounding the number of processes (a fork bomb) is the hard part when the harness runs as
root, because the kernel never enforces ``RLIMIT_NPROC`` for uid 0. Two mechanisms are
used, both when available:

* a **pids cgroup** per run (cgroup v1 ``pids`` hierarchy, or a cgroup v2 directory whose
  ``cgroup.subtree_control`` enables ``pids``) with ``pids.max``; it also lists every
  process of the run, including ones that left the session, so all of them can be killed;
* an **unprivileged uid** (``nobody``, 65534) for the program, so ``RLIMIT_NPROC`` could
  apply; it is set only when there is no pids cgroup, because it counts every process of
  that uid and so is shared by concurrent runs. If that uid cannot search the
  interpreter's directory, the launcher keeps ``CAP_DAC_READ_SEARCH`` (read-only access).

The filesystem is confined by **bubblewrap** (``bwrap``, Debian's ``bubblewrap``) where it is
installed and works: a new user, pid, network, IPC and UTS namespace; a root built from a
read-only ``/usr`` (and the interpreter's prefix, staged by the root launcher since the
dropped uid cannot search ``/root``), a few ``/etc`` files and nothing else of the host — no ``/home``, no
``/root``, no host ``/tmp`` or sockets, no ``/etc/shadow``; a fresh ``/proc`` of the new
pid namespace; private size-limited tmpfs for the work directory, ``/tmp`` and
``/dev/shm`` (the disk quota). Without bubblewrap the sandbox falls back, loudly, to the
namespaces and uid drop below, under which the program can read what the harness can.

A non-root harness gets ``RLIMIT_NPROC`` directly (set to the user's current process count
plus the budget, since the limit counts all of the user's processes). Network isolation is
``unshare(CLONE_NEWNET)`` (with ``CLONE_NEWUSER`` when not root). Everything is probed by
actually running a tiny program under each candidate configuration, strongest first;
whatever fails is silently dropped (logged at debug level).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

LAUNCHER = str(Path(__file__).with_name("sandbox_launcher.py"))
NOBODY_UID = 65534
NOBODY_GID = 65534
CGROUP_PREFIX = "codedec-sbx-"
WORKDIR_PREFIX = "codedec-sbx-"
INSIDE_WORKDIR = "/codedec-sbx-work"  # the program's working directory inside bubblewrap
_SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # merged-/usr symlinks, or dirs
_ETC_FILES = ("ld.so.cache", "localtime", "nsswitch.conf")
_cgroup_ids = itertools.count()


@dataclass(frozen=True)
class Isolation:
    """The confinement a run gets on top of rlimits, new session and ``python -I``."""

    netns: bool = False  # no network (new network namespace)
    pidns: bool = False  # new pid namespace whose init reaps everything (see the launcher)
    drop_uid: int | None = None  # run the program as this uid (root harness only)
    drop_gid: int | None = None
    read_caps: bool = False  # keep CAP_DAC_READ_SEARCH after dropping the uid
    pids_cgroup: str | None = None  # directory in which per-run pids cgroups are made
    bwrap: str | None = None  # bubblewrap's path: filesystem confinement (see the module docstring)

    @property
    def nproc_enforced(self) -> bool:
        """True when ``RLIMIT_NPROC`` is the process limit (no cgroup; the program is not root)."""
        return not self.pids_cgroup and (self.drop_uid is not None or os.geteuid() != 0)

    def describe(self) -> str:
        parts = []
        if self.bwrap:
            parts.append("bubblewrap: read-only system, private /tmp /dev/shm and work dir with a disk quota, "
                         "no host /proc or files, user/pid/net/ipc namespaces")
        else:
            parts.append("NO filesystem isolation (bubblewrap missing or not working: the program can read "
                         "what the harness can)")
        if self.pids_cgroup:
            parts.append(f"pids cgroup under {self.pids_cgroup}")
        if self.drop_uid is not None:
            parts.append(f"uid {self.drop_uid}" + (" +CAP_DAC_READ_SEARCH" if self.read_caps else ""))
        if self.nproc_enforced:
            parts.append("RLIMIT_NPROC")
        if self.pidns:
            parts.append("pid namespace")
        parts.append("no network" if self.netns else "network NOT isolated")
        if not (self.pids_cgroup or self.nproc_enforced):
            parts.append("NO process-count limit (fork bombs only stopped by the timeout)")
        return ", ".join(parts)


def minimal_env(workdir: str) -> dict[str, str]:
    """The whole environment of a sandboxed program."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": workdir, "TMPDIR": workdir}


def bwrap_spec(bwrap: str, python: str, disk_mb: int) -> dict[str, object]:
    """The bubblewrap command line the launcher completes with the fds it opens as root.

    ``pre``/``post`` go before/after the launcher's ``--ro-bind`` (``binds``: the interpreter's
    prefix) and ``--file`` (the program) arguments; the program runs as ``python -I`` on the real
    interpreter behind ``python`` (a venv's interpreter without the venv: generated code
    gets the standard library only).
    """
    real = os.path.realpath(python)
    prefix = os.path.dirname(os.path.dirname(real))
    size = str(disk_mb << 20)
    pre = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--clearenv"]
    for key, value in minimal_env(INSIDE_WORKDIR).items():
        pre += ["--setenv", key, value if key != "TMPDIR" else "/tmp"]
    pre += ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM_LINKS:
        path = "/" + name
        if os.path.islink(path):
            pre += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            pre += ["--ro-bind", path, path]
    for name in _ETC_FILES:
        pre += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    pre += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/dev/shm", INSIDE_WORKDIR):
        pre += ["--size", size, "--perms", "1777" if path != INSIDE_WORKDIR else "0755", "--tmpfs", path]
    binds = [] if prefix == "/usr" or prefix.startswith("/usr/") else [[prefix, prefix]]
    return {"path": bwrap, "pre": pre, "binds": binds, "post": ["--chdir", INSIDE_WORKDIR, "--remount-ro", "/"],
            "python": real, "program": f"{INSIDE_WORKDIR}/program.py"}


def launch(python: str, program: str, workdir: str, iso: Isolation, rlimits: dict[str, tuple[int, int]],
           cgroup: RunCgroup | None, disk_mb: int = 64) -> subprocess.Popen[bytes]:
    """Start the launcher on ``program`` in a new session; stdout/stderr are pipes, stdin is null.

    ``disk_mb``: under bubblewrap, the size of each private tmpfs (work dir, /tmp, /dev/shm).
    """
    import json

    cfg = {"python": python, "program": program, "netns": iso.netns, "pidns": iso.pidns, "rlimits": rlimits,
           "drop_uid": iso.drop_uid, "drop_gid": iso.drop_gid, "read_caps": iso.read_caps,
           "cgroup_procs": cgroup.procs_file if cgroup else None,
           "bwrap": bwrap_spec(iso.bwrap, python, disk_mb) if iso.bwrap else None}
    return subprocess.Popen(
        [python, "-I", "-S", LAUNCHER, json.dumps(cfg)], cwd=workdir, env=minimal_env(workdir),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, close_fds=True)


def make_workdir(iso: Isolation) -> str:
    """A fresh private directory, owned by the program's uid when it is dropped."""
    workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX)
    if iso.drop_uid is not None:
        os.chown(workdir, iso.drop_uid, iso.drop_gid if iso.drop_gid is not None else -1)
    return workdir


# ---------------------------------------------------------------- pids cgroup


class RunCgroup:
    """One pids cgroup for one run: made with a ``pids.max``, emptied and removed after."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")

    @classmethod
    def create(cls, parent: str, max_procs: int) -> RunCgroup:
        path = os.path.join(parent, f"{CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_ids)}")
        os.mkdir(path)
        try:
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_procs))
        except OSError:
            os.rmdir(path)
            raise
        return cls(path)

    def pids(self) -> list[int]:
        try:
            with open(self.procs_file) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill_all(self, spare: int | None = None, rounds: int = 200) -> None:
        """SIGKILL every member but ``spare`` until none is left (members may fork while we kill)."""
        for _ in range(rounds):
            pids = [p for p in self.pids() if p != spare]
            if not pids:
                return
            for pid in pids:
                _kill(pid)
            time.sleep(0.005)
        log.warning("sandbox cgroup %s still has processes after kill", self.path)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last members are being reaped
                time.sleep(0.01)
        log.warning("could not remove sandbox cgroup %s", self.path)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def find_pids_cgroup() -> str | None:
    """The directory where this process may create child pids cgroups, or None."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[str] = []
    for line in mounts:
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        mount_point, fstype, options = fields[4], post_fields[0], post_fields[2].split(",")
        for entry in own:
            hier, _, rest = entry.partition(":")
            controllers, _, rel = rest.partition(":")
            if fstype == "cgroup" and "pids" in options and "pids" in controllers.split(","):
                candidates.append(os.path.join(mount_point, rel.lstrip("/")))
            elif fstype == "cgroup2" and hier == "0" and controllers == "":
                path = os.path.join(mount_point, rel.lstrip("/"))
                try:
                    enabled = Path(path, "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                if "pids" in enabled:
                    candidates.append(path)
    for path in candidates:
        if os.access(path, os.W_OK):
            _remove_stale_cgroups(path)
            return path
    return None


def _remove_stale_cgroups(parent: str) -> None:
    """Remove cgroups left by harness processes that died (their pid is in the name)."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(CGROUP_PREFIX)]
    except OSError:
        return
    for name in names:
        owner = name[len(CGROUP_PREFIX):].split("-")[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            RunCgroup(os.path.join(parent, name)).remove()


# ---------------------------------------------------------------- process scans


def _scan() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, session) of every process, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2:].split()  # state ppid pgrp session ...
            out.append((int(name), fields[0], int(fields[1]), int(fields[3])))
        except (OSError, IndexError, ValueError):
            continue
    return out


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    return [pid for pid, state, _, session in _scan() if session == sid and state != "Z"]


def descendants(root: int) -> list[int]:
    """Live processes below ``root`` in the process tree (children first)."""
    children: dict[int, list[int]] = {}
    for pid, state, ppid, _ in _scan():
        if state != "Z":
            children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_run(root: int, spare_root: bool, rounds: int = 50) -> None:
    """SIGKILL the descendants and session members of ``root`` (and ``root`` unless spared).

    The launcher is a subreaper (or the parent of a pid-namespace init), so everything a
    program starts stays below it, even after ``setsid``; the session scan is a second net.
    """
    if not spare_root:
        _kill(root)
        try:
            os.killpg(root, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for _ in range(rounds):
        victims = set(descendants(root)) | set(session_members(root))
        victims.discard(root)
        if not victims:
            return
        for pid in victims:
            _kill(pid)
        time.sleep(0.005)


def sandbox_process_count() -> int:
    """Live processes started by the sandbox, wherever they are in the process tree: their
    command line names a ``codedec-sbx-`` work directory (the launcher's, or the program's
    path inside bubblewrap)."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if WORKDIR_PREFIX.encode() in cmdline and state != "Z":
            count += 1
    return count


def user_process_count() -> int:
    """Number of processes (threads count too for RLIMIT_NPROC, roughly) of this real uid."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += int(Path(f"/proc/{name}/status").read_text().split("Threads:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return count


# ---------------------------------------------------------------- probe

_PROBE_PROGRAM = "import os\nprint(os.getuid())\n"


def _try(python: str, iso: Isolation) -> bool:
    return _attempt(python, iso)[0]


def _attempt(python: str, iso: Isolation) -> tuple[bool, str]:
    """Run the probe program under ``iso``: (it worked, the end of its stderr)."""
    workdir = make_workdir(iso)
    cgroup = None
    try:
        program = os.path.join(workdir, "probe.py")
        Path(program).write_text(_PROBE_PROGRAM)
        if iso.pids_cgroup:
            cgroup = RunCgroup.create(iso.pids_cgroup, 8)
        proc = launch(python, program, workdir, iso, {"RLIMIT_CORE": (0, 0)}, cgroup)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            kill_run(proc.pid, spare_root=False)
            proc.communicate()
            return False, "probe timed out"
        want = str(iso.drop_uid) if iso.drop_uid is not None else None
        ok = proc.returncode == 0 and (want is None or out.decode().strip() == want)
        tail = err.decode(errors="replace")[-300:].strip()
        if not ok:
            log.debug("sandbox probe %s failed: rc=%s %s", iso, proc.returncode, tail)
        return ok, tail
    except OSError as exc:
        log.debug("sandbox probe %s failed: %s", iso, exc)
        return False, str(exc)
    finally:
        if cgroup:
            cgroup.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def _first_working(python: str, options: list[Isolation]) -> Isolation | None:
    return next((iso for iso in options if _try(python, iso)), None)


@functools.cache
def probe_isolation(python: str) -> Isolation:
    """The strongest :class:`Isolation` under which ``python`` runs a program here (cached).

    Greedy, one dimension at a time (about four tiny runs): pids cgroup; then bubblewrap
    (as root with the unprivileged uid), and if it works that is the answer; otherwise,
    with a warning, as root the unprivileged uid without and with ``CAP_DAC_READ_SEARCH``,
    then the namespaces (network + pid, pid, network).
    """
    cgroup_parent = find_pids_cgroup()
    base = Isolation()
    if cgroup_parent and _try(python, Isolation(pids_cgroup=cgroup_parent)):
        base = Isolation(pids_cgroup=cgroup_parent)
    elif not _try(python, base):
        log.warning("sandbox: the launcher does not run here; every run will report an error")
        return base
    bwrap = shutil.which("bwrap")
    if bwrap:
        drop = {"drop_uid": NOBODY_UID, "drop_gid": NOBODY_GID} if os.geteuid() == 0 else {}
        confined = replace(base, bwrap=bwrap, netns=True, pidns=True, **drop)
        ok, why = _attempt(python, confined)
        if ok:
            log.info("sandbox isolation: %s", confined.describe())
            return confined
        log.warning("sandbox: bubblewrap (%s) does not run here (%s); generated code will NOT have its "
                    "filesystem confined", bwrap, why or "no detail")
    else:
        log.warning("sandbox: bubblewrap (bwrap) is not installed, so generated code can read every file the "
                    "harness can and write outside its work dir; install it (Debian: apt-get install bubblewrap)")
    if os.geteuid() == 0:
        users = [replace(base, drop_uid=NOBODY_UID, drop_gid=NOBODY_GID, read_caps=caps) for caps in (False, True)]
        base = _first_working(python, users) or base
    spaces = [replace(base, netns=True, pidns=True), replace(base, pidns=True), replace(base, netns=True)]
    iso = _first_working(python, spaces) or base
    log.info("sandbox isolation: %s", iso.describe())
    if not (iso.pids_cgroup or iso.nproc_enforced):
        log.warning("sandbox: no process-count limit works here; fork bombs run until the timeout")
    return iso
