"""Member-access cases for the monitor's table: only accesses mypy can judge are kept."""

from __future__ import annotations

import pytest
from codedec_eval.judge import available
from codedec_eval.member_cases import candidates, member_cases

pytestmark = pytest.mark.skipif(not available(), reason="mypy is not installed (a dev dependency)")

SHAPES = '''from dataclasses import dataclass


@dataclass
class Box:
    width: float

    def area(self) -> float:
        return self.width * 2


def untyped(x):
    return x.width


def typed(b: Box) -> float:
    return b.width + 1


class Dyn:
    def __getattr__(self, name: str) -> int:
        return 1


def dynamic(d: Dyn) -> int:
    return d.anything


def call(b: Box) -> float:
    return max(b.area(),
               b.width)
'''


def test_candidates_are_one_line_statements():
    found = {(line, recv, member) for line, _col, recv, member in candidates(SHAPES)}
    # the two-line return at the end is not a candidate (a single-line completion cannot end it)
    assert found == {(9, "self", "width"), (13, "x", "width"), (17, "b", "width"), (26, "d", "anything")}


def test_only_receivers_mypy_types_are_kept(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shapes.py").write_text(SHAPES)
    cases = member_cases(pkg, 10, root=tmp_path, per_file=10, cache_dir=tmp_path / ".mypy")
    # x is Any (unannotated) and Dyn has __getattr__: mypy could not judge a wrong member there
    assert sorted((c.line, c.receiver) for c in cases) == [(9, "self"), (17, "b")]
    for c in cases:
        assert c.prefix.endswith(f"{c.receiver}.") and c.prefix + c.target + c.suffix == SHAPES
        assert c.target.startswith(c.member)
    assert {c.target for c in cases} == {"width * 2", "width + 1"}
