"""The hostile suite: every attack is contained and scored as a failure; canonical solutions still pass.

The containment checks are shown to bite: with bubblewrap switched off (the fallback
isolation) the same checks report the breaches.
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from codedec_eval import hostile
from codedec_eval.humaneval import load_humaneval
from codedec_eval.isolation import probe_isolation
from codedec_eval.sandbox import run_program

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


@pytest.fixture(scope="module")
def confined():
    iso = probe_isolation(sys.executable)
    if not iso.bwrap:
        pytest.skip(f"bubblewrap is not available here ({iso.describe()}); `make install` installs it as root")
    return iso


def test_every_hostile_case_is_contained_and_fails(confined, deadline):
    outcomes = deadline(240, hostile.run_suite)
    assert [o.case for o in outcomes] == [c.name for c in hostile.CASES]
    for o in outcomes:
        assert o.contained, (o.case, o.breaches)
        assert o.status != "passed", o
    by_case = {o.case: o for o in outcomes}
    assert by_case["sys_exit_0"].status == by_case["os_exit_0"].status == "failed"
    assert "before the end" in by_case["sys_exit_0"].detail
    assert by_case["sleep_forever"].status == "timeout"
    assert by_case["fork_bomb"].peak_procs <= 16 + 4


def test_the_checks_catch_breaches_without_bubblewrap(confined, deadline, monkeypatch):
    """The same suite under the fallback isolation (no bubblewrap; read capability kept, as the
    probe picks when the interpreter lives under /root) reports what got through."""
    import codedec_eval.sandbox as sandbox

    weak = dataclasses.replace(confined, bwrap=None, read_caps=True)
    monkeypatch.setattr(sandbox, "probe_isolation", lambda python: weak)
    cases = [c for c in hostile.CASES if c.name in ("read_secrets", "write_outside", "open_socket")]
    outcomes = {o.case: o for o in deadline(60, hostile.run_suite, cases)}
    assert not outcomes["read_secrets"].contained
    assert any("canary" in b for b in outcomes["read_secrets"].breaches)
    assert any("/tmp/" in b for b in outcomes["write_outside"].breaches)
    assert any("UNIX" in b for b in outcomes["open_socket"].breaches)


def test_exit_zero_without_the_sentinel_is_a_failure(deadline):
    """Whatever the isolation: a pass needs the program to reach its end."""
    assert deadline(20, run_program, "print('x')\n").status == "passed"
    for code in ("import sys\nsys.exit(0)\nprint('never')\n", "import os\nos._exit(0)\n",
                 "raise SystemExit\n"):
        r = deadline(20, run_program, code)
        assert r.status == "failed" and r.returncode == 0 and "before the end" in r.detail, (code, r)


def test_canonical_humaneval_solutions_all_pass(deadline):
    problems = load_humaneval()

    def run(p):
        return p.task_id, run_program(p.program(p.canonical_solution), timeout_s=20)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = deadline(300, lambda: list(pool.map(run, problems)))
    failed = [(tid, r.status, r.detail, r.stderr_tail[-300:]) for tid, r in results if not r.passed]
    assert len(results) == 164 and not failed, failed
