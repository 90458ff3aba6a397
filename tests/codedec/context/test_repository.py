"""Cross-file context gathered from a workspace: imported definitions, recent chunks, similar units."""

from __future__ import annotations

import logging
import os

from codedec.context.repository import Repositories, RepositoryContext, find_root, module_names


def _workspace(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    pkg = tmp_path / "shapes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .geometry import Box\n")
    (pkg / "geometry.py").write_text(
        "UNIT = 1\n\n\nclass Box:\n    def __init__(self, w):\n        self.w = w\n\n"
        "    def area(self):\n        return self.w * self.w\n\n\ndef make_box(w):\n    return Box(w)\n")
    (pkg / "colors.py").write_text("def paint(box, color):\n    box.color = color\n    return box\n")
    (pkg / "util.py").write_text("def width_of(box):\n    return box.w\n")
    main = tmp_path / "main.py"
    main.write_text("from shapes import Box\nfrom shapes.geometry import make_box\nimport shapes.util as u\n\n"
                    "b = make_box(2)\nprint(u.width_of(b))\nb.")
    return tmp_path, main


def test_find_root_and_module_names(tmp_path):
    root, main = _workspace(tmp_path)
    assert find_root(main) == root.resolve()
    assert find_root(root / "shapes" / "geometry.py") == root.resolve()
    assert "shapes.geometry" in module_names(str(root / "shapes" / "geometry.py"), root)


def test_imported_definitions_through_reexports_and_module_aliases(tmp_path):
    root, main = _workspace(tmp_path)
    ctx = RepositoryContext(root)
    text = main.read_text()
    chunks = ctx.gather(str(main), text, "", budget_ms=None)
    imported = [(c.path, c.name) for c in chunks if c.kind == "import"]
    assert imported == [("shapes/geometry.py", "Box"), ("shapes/geometry.py", "Box.__init__"),
                        ("shapes/geometry.py", "Box.area"), ("shapes/geometry.py", "make_box"),
                        ("shapes/util.py", "width_of")]
    assert chunks[0].text.startswith("class Box:")
    assert all(c.path != "main.py" for c in chunks)


def test_open_document_text_wins_and_recent_edits_come_back(tmp_path):
    root, main = _workspace(tmp_path)
    colors = str(root / "shapes" / "colors.py")
    unsaved = "def paint(box, color):\n    box.color = color.upper()\n    return box\n"
    ctx = RepositoryContext(root, read_override=lambda p: unsaved if p == colors else None)
    ctx.note_edit(colors, unsaved, 30)
    chunks = ctx.gather(str(main), main.read_text(), "", budget_ms=None)
    recent = [c for c in chunks if c.kind == "recent"]
    assert [c.path for c in recent] == ["shapes/colors.py"]
    assert "color.upper()" in recent[0].text


def test_similar_units_rank_by_shared_identifiers(tmp_path):
    root, main = _workspace(tmp_path)
    ctx = RepositoryContext(root)
    prefix = "def repaint(box, color):\n    box.color = color\n"
    chunks = ctx.gather(str(root / "shapes" / "new.py"), prefix, "", budget_ms=None)
    similar = [c for c in chunks if c.kind == "similar"]
    assert similar and similar[0].name == "paint"


def test_bad_files_are_skipped_with_a_log_line(tmp_path, caplog):
    root, main = _workspace(tmp_path)
    (root / "shapes" / "blob.py").write_bytes(b"\x00\x01binary")
    (root / "shapes" / "latin.py").write_bytes(b"x = '\xe9'\n")
    (root / "shapes" / "huge.py").write_text("x = 1\n" * 50)
    locked = root / "shapes" / "locked.py"
    locked.write_text("def secret():\n    pass\n")
    os.chmod(locked, 0)
    main.write_text("from shapes.blob import a\nfrom shapes.latin import x\nfrom shapes.huge import x\n"
                    "from shapes.locked import secret\nfrom shapes.missing import nothing\nsecret(")
    ctx = RepositoryContext(root, max_file_bytes=100)
    with caplog.at_level(logging.INFO, logger="codedec.context.repository"):
        chunks = ctx.gather(str(main), main.read_text(), "", budget_ms=None)
    assert all(c.path not in ("shapes/blob.py", "shapes/latin.py", "shapes/huge.py") for c in chunks)
    logged = caplog.text
    assert "binary" in logged and "not UTF-8" in logged and "over 100 bytes" in logged
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        assert "unreadable" in logged


def test_cached_per_file_version(tmp_path, monkeypatch):
    root, main = _workspace(tmp_path)
    ctx = RepositoryContext(root)
    ctx.gather(str(main), main.read_text(), "", budget_ms=None)
    import codedec.context.repository as repository

    parsed = []
    real = repository.outline
    monkeypatch.setattr(repository, "outline", lambda text: parsed.append(text) or real(text))
    ctx.gather(str(main), main.read_text() + "x", "", budget_ms=None)
    assert parsed == []  # nothing re-parsed: neither the imports nor the files changed
    geometry = root / "shapes" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\n\ndef extra():\n    pass\n")
    os.utime(geometry, ns=(1, 1))
    ctx.gather(str(main), main.read_text(), "", budget_ms=None)
    assert len(parsed) == 1  # only the changed file


def test_a_spent_budget_returns_what_it_has(tmp_path):
    root, main = _workspace(tmp_path)
    assert RepositoryContext(root).gather(str(main), main.read_text(), "", budget_ms=0.0) == []


def test_repositories_one_context_per_root(tmp_path):
    root, main = _workspace(tmp_path)
    repos = Repositories({})
    assert repos.for_path(str(main)) is repos.for_path(str(root / "shapes" / "util.py"))
