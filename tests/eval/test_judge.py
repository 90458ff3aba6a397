"""The independent member judge (mypy attr-defined), on a small two-file workspace."""

from __future__ import annotations

import pytest
from codedec_eval.judge import available, member_errors

pytestmark = pytest.mark.skipif(not available(), reason="mypy is not installed (a dev dependency)")

SHAPES = ("from dataclasses import dataclass\n\n\n@dataclass\nclass Box:\n    width: float\n    height: float\n\n"
          "    def area(self) -> float:\n        return self.width * self.height\n")
MAIN = "from shapes import Box\n\n\ndef total(boxes: list[Box]) -> float:\n    s = 0.0\n    for box in boxes:\n        s += box.{}\n    return s\n"


@pytest.fixture()
def workspace(tmp_path):
    (tmp_path / "shapes.py").write_text(SHAPES)
    main = tmp_path / "main.py"
    main.write_text(MAIN.format("width"))
    return tmp_path, main


def test_a_member_the_class_lacks_is_an_error_on_its_line(workspace):
    root, main = workspace
    errors = member_errors(main, MAIN.format("depth"), lines={7}, root=root, cache_dir=root / ".mypy")
    assert [(e.line, e.name) for e in errors] == [(7, "depth")]
    assert member_errors(main, MAIN.format("area()"), lines={7}, root=root, cache_dir=root / ".mypy") == []
    assert member_errors(main, MAIN.format("depth"), lines={6}, root=root, cache_dir=root / ".mypy") == []
    assert main.read_text() == MAIN.format("width")  # the file on disk is never written


def test_module_members_too(workspace):
    root, main = workspace
    text = "import os\n\nx = os.path.joinn('a', 'b')\n"
    assert [e.name for e in member_errors(main, text, root=root)] == ["joinn"]


def test_a_file_of_an_installed_package():
    """Checked in place, site-packages would be the source root and mypy would stop at the
    modules there that shadow its own; the judge checks through a mirror of the package."""
    from pathlib import Path

    import jedi

    f = Path(jedi.__file__).parent / "api" / "classes.py"
    text = f.read_text() + "\nimport os\nos.path.joinn\n"
    n = text.count("\n")
    assert [(e.line, e.name) for e in member_errors(f, text, lines={n})] == [(n, "joinn")]


def test_a_completion_that_breaks_the_syntax_is_not_judged(workspace):
    from codedec_eval.judge import Unparsable

    root, main = workspace
    with pytest.raises(Unparsable):
        member_errors(main, MAIN.format("width("), root=root)
