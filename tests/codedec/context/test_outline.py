"""tree-sitter outlines: units tile the file exactly, definitions and imports are found."""

from __future__ import annotations

import importlib.util

import pytest

from codedec.context.outline import Import, outline

SOURCE = '''"""Module doc."""
import os
import a.b as ab
from .core import (Thing, other as alias)
from .. import sibling
from pkg.mod import *

LIMIT = 10


# a comment about f
@decorator
def f(x):
    return x + LIMIT


class Box:
    """A box."""

    size = 3

    def area(self):
        return self.size ** 2

    # the volume
    def volume(self):
        return self.size ** 3
print(f(1))
'''


def test_units_tile_the_text_and_name_definitions():
    o = outline(SOURCE)
    assert "".join(u.text for u in o.units) == SOURCE
    kinds = [(u.kind, u.name) for u in o.units]
    assert kinds == [("statements", ""), ("assignment", "LIMIT"), ("function", "f"), ("class", "Box"),
                     ("method", "Box.area"), ("method", "Box.volume"), ("statements", "")]
    f = next(u for u in o.units if u.name == "f")
    assert f.text.startswith("# a comment about f\n@decorator\ndef f(x):")  # comment and decorator belong to it
    volume = next(u for u in o.units if u.name == "Box.volume")
    assert volume.text.startswith("    # the volume\n")
    assert [u.name for u in o.definition("Box")] == ["Box", "Box.area", "Box.volume"]


def test_imports():
    o = outline(SOURCE)
    assert Import("os", alias="os") in o.imports
    assert Import("a.b", alias="ab") in o.imports
    assert Import("core", 1, (("Thing", "Thing"), ("other", "alias"))) in o.imports
    assert Import("", 2, (("sibling", "sibling"),)) in o.imports
    assert Import("pkg.mod", 0, (("*", "*"),)) in o.imports


@pytest.mark.parametrize("text", ["", "x", "def broken(:\n    pass\n\nclass\n", "a\r\nb\r\n", "é = 1\n\x0c\ny = 2"])
def test_odd_text_still_tiles(text):
    assert "".join(u.text for u in outline(text).units) == text


def test_real_file_tiles():
    path = importlib.util.find_spec("click.core").origin
    text = open(path, encoding="utf-8").read()
    o = outline(text)
    assert "".join(u.text for u in o.units) == text
    assert any(u.name == "Command.invoke" for u in o.units)
