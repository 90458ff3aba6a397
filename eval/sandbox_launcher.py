"""Child-side half of the sandbox: confine this process, then run and supervise the untrusted program.

Run only by :mod:`codedec_eval.sandbox` as
``python -I -S sandbox_launcher.py '<json config>'`` in a fresh session, with the working
directory, environment and pipes already set up by the parent. It is *not* importable API:
it uses the standard library only, so that nothing outside the interpreter is loaded
before the limits are in place, and it never returns: it ends the way the program ended, or
exits with :data:`SETUP_FAILED`.

Steps, in this order (each one optional, as the config says):

1. join the per-run pids cgroup (write our pid to its ``cgroup.procs``; needs root);
2. ``unshare`` a new network namespace (no network, not even loopback) and/or a new pid
   namespace (as a non-root user together with ``CLONE_NEWUSER``, which an unprivileged
   user may create);
3. drop privileges (root only): ``setgroups([])``, ``setgid``, ``setuid`` to an
   unprivileged id, keeping one capability, ``CAP_DAC_READ_SEARCH``, in the ambient set
   when asked — needed when the interpreter lives in a directory the unprivileged id
   cannot search (``/root/.pyenv``); it grants reading, never writing, killing or
   forking beyond the limits;
4. ``PR_SET_NO_NEW_PRIVS`` (no set-uid binary can give the privileges back) and
   ``PR_SET_PDEATHSIG(SIGKILL)`` (the program dies with the harness);
5. fork the program and supervise it: reap every child until the program ends, then
   make sure nothing it started is left. With a pid namespace the supervisor is the
   namespace's init (a forked child; the launcher stays outside) and the kernel kills and
   reaps the rest of the namespace when it exits; without one the launcher itself is a
   child subreaper (``PR_SET_CHILD_SUBREAPER``: orphans, even ones that called
   ``setsid``, are reparented to it), kills its remaining descendants and reaps them. So
   no process or zombie outlives the run even when the machine's pid 1 reaps slowly (or
   never). The launcher then ends the same way as the program (same exit code or signal);
6. in the program's process: ``setrlimit`` for each limit given (address space, CPU
   seconds, file size, core size, number of processes, open files), then
   ``execv(python, [python, "-I", program])``.

With ``bwrap`` in the config the filesystem is confined too, by bubblewrap, and the steps are
(:func:`_exec_bwrap`): join the cgroup; while still root, in a private mount namespace,
bind the directories the program's uid may not reach (the interpreter under ``/root``) into
the run's work directory, and open the program file; set the rlimits; drop privileges
*without* any capability; ``NO_NEW_PRIVS`` and ``PDEATHSIG``; then ``execv`` bwrap, which
builds a new user, pid, network, IPC and UTS namespace with a read-only system, binds those
directories, copies the program into a size-limited private tmpfs
and runs it (bwrap's own init reaps and, with ``--die-with-parent``, everything dies with
the launcher's pid — which is now bwrap's).
"""

import ctypes
import json
import os
import resource
import signal
import sys

SETUP_FAILED = 125  # exit status when a requested confinement step failed
SETUP_MARKER = "codedec-sandbox-setup:"

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(libc: ctypes.CDLL, net: bool, pid: bool) -> None:
    flags = (_CLONE_NEWNET if net else 0) | (_CLONE_NEWPID if pid else 0)
    if flags and os.geteuid() != 0:
        flags |= _CLONE_NEWUSER
    if flags:
        _check(libc.unshare(flags), "unshare")


def _drop_privileges(libc: ctypes.CDLL, uid: int, gid: int, read_caps: bool) -> None:
    if read_caps:
        _check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(KEEPCAPS)")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if read_caps:
        bit = 1 << _CAP_DAC_READ_SEARCH
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = data[0].inheritable = bit
        _check(libc.capset(ctypes.byref(header), data), "capset")
        _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH, 0, 0),
               "prctl(CAP_AMBIENT_RAISE)")


def _confine(cfg: dict) -> ctypes.CDLL:
    libc = _libc()
    if cfg.get("cgroup_procs"):
        with open(cfg["cgroup_procs"], "w") as f:
            f.write(str(os.getpid()))
    _unshare(libc, bool(cfg.get("netns")), bool(cfg.get("pidns")))
    if cfg.get("drop_uid") is not None:
        _drop_privileges(libc, int(cfg["drop_uid"]), int(cfg["drop_gid"]), bool(cfg.get("read_caps")))
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _die_with_parent(libc)
    return libc


def _die_with_parent(libc: ctypes.CDLL) -> None:
    _check(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "prctl(PDEATHSIG)")


def _exec_program(cfg: dict) -> None:
    for name, (soft, hard) in cfg.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    os.execv(cfg["python"], [cfg["python"], "-I", cfg["program"]])


def _end_like(status: int) -> None:
    """Exit the way a process with wait status ``status`` ended (same code or same signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot (and need not) be reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] over every live process, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # state ppid ...
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(name))
    return children


def _kill_descendants(rounds: int = 100) -> None:
    """SIGKILL every descendant of this process (orphans were reparented to us) and reap them."""
    me = os.getpid()
    for _ in range(rounds):
        children, stack, found = _children_map(), [me], []
        while stack:
            for child in children.get(stack.pop(), []):
                found.append(child)
                stack.append(child)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap_all(block=bool(found))
        if not found:
            return


def _reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        block = False


def _supervise(cfg: dict, report_fd: int | None, in_pid_namespace: bool) -> int:
    """Fork the program, reap every child until it ends, clean up, return its wait status.

    As the pid-namespace init the rest of the namespace dies with us (the kernel kills and
    reaps it); as a subreaper outside a pid namespace we kill our adopted descendants first.
    """
    program = os.fork()
    if program == 0:
        if report_fd is not None:
            os.close(report_fd)
        try:
            _exec_program(cfg)
        except Exception as exc:
            _fail(exc)
        os._exit(SETUP_FAILED)
    while True:
        pid, status = os.wait()
        if pid == program:
            break
    if not in_pid_namespace:
        _kill_descendants()
    return status


def _run_in_pid_namespace(libc: ctypes.CDLL, cfg: dict) -> None:
    read_fd, write_fd = os.pipe()
    init = os.fork()
    if init == 0:  # pid 1 of the new namespace
        os.close(read_fd)
        try:
            _die_with_parent(libc)
            status = _supervise(cfg, write_fd, in_pid_namespace=True)
            os.write(write_fd, str(status).encode())
            os._exit(0)
        except Exception as exc:
            _fail(exc)
        os._exit(SETUP_FAILED)
    os.close(write_fd)
    _, init_status = os.waitpid(init, 0)
    report = os.read(read_fd, 64)
    if not report:  # the init died before the program ended (killed from outside)
        _end_like(init_status)
    _end_like(int(report))


def _exec_bwrap(cfg: dict) -> None:
    """Confine the filesystem with bubblewrap (see the module docstring); never returns."""
    libc = _libc()
    if cfg.get("cgroup_procs"):
        with open(cfg["cgroup_procs"], "w") as f:
            f.write(str(os.getpid()))
    bw = cfg["bwrap"]
    bind_args: list[str] = []
    dropping = cfg.get("drop_uid") is not None
    if dropping and bw["binds"]:
        # The dropped uid cannot search /root, where the interpreter may live. In a private
        # mount namespace (still root) bind it into the run's work dir, which that uid owns.
        # (An fd opened as root and given to --ro-bind-fd is refused once we are not root.)
        _check(libc.unshare(_CLONE_NEWNS), "unshare(NEWNS)")
        _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount(private)")
        workdir = os.path.dirname(cfg["program"])
        for i, (src, dest) in enumerate(bw["binds"]):
            stage = os.path.join(workdir, f"bind{i}")
            os.mkdir(stage)
            _check(libc.mount(src.encode(), stage.encode(), None, _MS_BIND | _MS_REC, None), f"mount({src})")
            bind_args += ["--ro-bind", stage, dest]
    else:
        for src, dest in bw["binds"]:
            bind_args += ["--ro-bind", src, dest]
    program_fd = os.open(cfg["program"], os.O_RDONLY)
    os.set_inheritable(program_fd, True)
    bind_args += ["--perms", "0644", "--file", str(program_fd), bw["program"]]
    for name, (soft, hard) in cfg.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    if dropping:
        _drop_privileges(libc, int(cfg["drop_uid"]), int(cfg["drop_gid"]), read_caps=False)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _die_with_parent(libc)
    argv = [bw["path"], *bw["pre"], *bind_args, *bw["post"], "--", bw["python"], "-I", bw["program"]]
    os.execv(bw["path"], argv)


def main() -> None:
    try:
        cfg = json.loads(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # _end_like may re-raise a core-dumping signal
        if cfg.get("bwrap"):
            _exec_bwrap(cfg)
        libc = _confine(cfg)
        if cfg.get("pidns"):
            _run_in_pid_namespace(libc, cfg)
        else:
            _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
            _end_like(_supervise(cfg, None, in_pid_namespace=False))
    except Exception as exc:  # any failure: report it and never run the program unconfined
        _fail(exc)


def _fail(exc: Exception) -> None:
    sys.stderr.write(f"{SETUP_MARKER} {type(exc).__name__}: {exc}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main()
