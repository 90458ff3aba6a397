"""The sandbox contains what generated code does wrong, reports it as a failure and never hangs."""

from __future__ import annotations

import os
import sys

import pytest
from codedec_eval.hostile import peak_processes
from codedec_eval.humaneval import load_humaneval
from codedec_eval.isolation import probe_isolation
from codedec_eval.sandbox import run_program

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


def _proc_cmdlines_with(marker: bytes) -> int:
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    n += marker in f.read()
            except OSError:
                pass
    return n


def test_passing_and_failing_humaneval_programs(deadline):
    problem = load_humaneval()[0]
    ok = deadline(30, run_program, problem.program(problem.canonical_solution))
    assert ok.status == "passed" and ok.passed and ok.returncode == 0, ok
    bad = deadline(30, run_program, problem.program("    return False\n"))
    assert bad.status == "failed" and not bad.passed and bad.returncode == 1
    assert "AssertionError" in bad.stderr_tail


def test_syntax_error_is_a_failure(deadline):
    r = deadline(30, run_program, "def f(:\n")
    assert r.status == "failed" and "SyntaxError" in r.stderr_tail


def test_infinite_loop_times_out(deadline):
    r = deadline(20, run_program, "while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert 900 <= r.wall_ms < 5000


def test_sleeping_program_with_closed_output_times_out(deadline):
    code = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n"
    r = deadline(20, run_program, code, timeout_s=0.5)
    assert r.status == "timeout"


def test_memory_bomb_hits_the_address_space_limit(deadline):
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n"
    r = deadline(30, run_program, code, memory_mb=256, timeout_s=10)
    assert r.status in ("failed", "killed") and not r.passed
    assert "MemoryError" in r.stderr_tail or r.status == "killed"


def test_single_huge_allocation_fails_fast(deadline):
    r = deadline(30, run_program, "x = bytearray(8 * 2**30)\n", memory_mb=256)
    assert r.status == "failed" and "MemoryError" in r.stderr_tail
    assert r.wall_ms < 5000


def test_fork_bomb_is_contained_and_cleaned_up(deadline, sandbox_processes):
    iso = probe_isolation(sys.executable)
    if not (iso.pids_cgroup or iso.nproc_enforced):
        pytest.skip(f"no process-count limit works here ({iso.describe()})")
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    with peak_processes() as peak:
        r = deadline(30, run_program, code, timeout_s=1.5, max_procs=16)
    assert r.status in ("timeout", "failed", "killed") and not r.passed
    assert peak[0] <= 16 + 2 + 2  # the budget, the launcher and its init, slack for a racing fork
    assert sandbox_processes() == 0
    # zombies of the bomb must not eat the next run's process budget
    code = "import os\nfor _ in range(8):\n    if os.fork() == 0:\n        os._exit(0)\n    os.wait()\nprint('ok')\n"
    again = deadline(30, run_program, code, max_procs=16)
    assert again.status == "passed", again


def test_detached_background_process_does_not_outlive_the_run(deadline):
    code = ("import subprocess\n"
            "subprocess.Popen(['sleep', '987.654'], start_new_session=True)\n"
            "print('started')\n")
    r = deadline(30, run_program, code)
    assert r.status == "passed" and "started" in r.stdout_tail
    assert _proc_cmdlines_with(b"987.654") == 0


def test_output_flood_is_capped_and_killed(deadline):
    r = deadline(20, run_program, "while True:\n    print('x' * 1000)\n", max_output_bytes=10_000)
    assert r.status == "output_limit" and not r.passed
    assert len(r.stdout_tail.encode()) <= 10_000


def test_output_tail_keeps_the_end(deadline):
    code = "import sys\nsys.stderr.write('a' * 5000 + 'END')\nraise SystemExit(3)\n"
    r = deadline(20, run_program, code, max_output_bytes=8_000)
    assert r.status == "failed" and r.returncode == 3 and r.stderr_tail.endswith("END")


def test_isolated_interpreter_minimal_env_and_private_workdir(deadline):
    code = ("import os, sys\n"
            "print(sys.flags.isolated, sorted(os.environ))\n"
            "print(os.getcwd())\n"
            "open('scratch.txt', 'w').write('x')\n")
    r = deadline(20, run_program, code)
    assert r.status == "passed", r
    flags_line, cwd = r.stdout_tail.splitlines()[:2]
    assert flags_line.startswith("1 ")
    assert "PYTHONPATH" not in flags_line and "VIRTUAL_ENV" not in flags_line
    assert "codedec-sbx-" in cwd and not os.path.exists(cwd)


def test_no_network_where_namespaces_work(deadline):
    if not probe_isolation(sys.executable).netns:
        pytest.skip("network namespaces are not available here")
    code = "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n"
    r = deadline(20, run_program, code)
    assert r.status == "failed" and "Error" in r.stderr_tail


def test_file_size_limit(deadline):
    code = "with open('big', 'wb') as f:\n    f.write(b'x' * (8 * 2**20))\n"
    r = deadline(20, run_program, code, max_file_mb=1)
    assert not r.passed


def test_bad_limits_are_misuse():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)


@pytest.mark.parametrize("mode", ["bare", "pidns", "netns", "probed"])
def test_every_fallback_level_runs_and_cleans_up(mode, deadline, monkeypatch):
    """The weaker isolations the probe may fall back to elsewhere behave the same for ordinary programs."""
    import codedec_eval.sandbox as sandbox
    from codedec_eval.isolation import Isolation

    probed = probe_isolation(sys.executable)
    iso = {"bare": Isolation(), "pidns": Isolation(pidns=probed.pidns), "netns": Isolation(netns=probed.netns),
           "probed": probed}[mode]
    monkeypatch.setattr(sandbox, "probe_isolation", lambda python: iso)
    assert deadline(20, run_program, "print(6 * 7)\n").stdout_tail == "42\n"
    assert deadline(20, run_program, "assert False\n").status == "failed"
    assert deadline(20, run_program, "while True:\n    pass\n", timeout_s=0.5).status == "timeout"
    code = ("import subprocess\nsubprocess.Popen(['sleep', '876.543'], start_new_session=True)\n")
    assert deadline(20, run_program, code).status == "passed"
    assert _proc_cmdlines_with(b"876.543") == 0
