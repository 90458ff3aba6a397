"""The language-server client against the real jedi-language-server: start, warm queries,
incremental sync, and a restart after the server dies."""

from __future__ import annotations

import time

import pytest

from codedec.monitor import MonitorClient


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    c = MonitorClient(root, restart_interval_s=0.0)
    if not c.start(wait=True):
        pytest.skip("jedi-language-server did not start")
    yield c
    c.close()


def names(client, path, text, offset=None):
    return client.request(str(path), text, len(text) if offset is None else offset).result(30)


def test_member_completion(client):
    text = "import os\nx = os.pa"
    got = names(client, client.root / "a.py", text, len(text) - 2)
    assert "path" in got and "getcwd" in got


def test_incremental_sync_keeps_the_document(client):
    path = client.root / "b.py"
    v1 = "class Point:\n    def norm(self): ...\n\np = Point()\np."
    assert "norm" in names(client, path, v1)
    v2 = v1.replace("def norm", "def length")  # an edit in the middle, sent as one range change
    got = names(client, path, v2)
    assert "length" in got and "norm" not in got
    assert client._docs[path.resolve().as_uri()][0] == 2  # one didOpen, then one didChange


def test_a_dead_server_is_restarted(client):
    client.kill_server()
    deadline = time.monotonic() + 5
    while client.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    text = "import os\nos."
    interval, client.restart_interval_s = client.restart_interval_s, 0.0  # due for a restart now
    try:
        assert "path" in names(client, client.root / "c.py", text)  # restarted by the request, which waits
    finally:
        client.restart_interval_s = interval
    assert client.ready and client.starts >= 2


def test_workspace_modules_do_not_shadow_the_standard_library(client, tmp_path):
    """A repository with its own logging.py (rich has one) is the server's working directory: the
    server must still start, and resolve the workspace's modules."""
    (tmp_path / "logging.py").write_text("class Handler:\n    def emit_record(self): ...\n")
    (tmp_path / "types.py").write_text("X = 1\n")
    c = MonitorClient(tmp_path)
    try:
        assert c.start(wait=True), "the language server did not start in a workspace with logging.py"
        text = "from logging import Handler\nHandler()."
        assert "emit_record" in c.request(str(tmp_path / "use.py"), text, len(text)).result(30)
    finally:
        c.close()
