"""build_records on a small hand-made repository and on a real installed package."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from codedec_eval.build_repobench import LEVELS, approx_token_count, build_records, level_for, write_records
from codedec_eval.repobench import build_prompt, load_repobench, record_from_dict

FILES = {
    "shop/__init__.py": "from .models import Item\n",
    "shop/models.py": '''
        """Data types."""


        class Item:
            """A thing for sale."""

            def __init__(self, name: str, price: float) -> None:
                self.name = name
                self.price = price


        def make_item(name: str) -> Item:
            return Item(name, 1.0)
        ''',
    "shop/pricing.py": '''
        DISCOUNT = 0.1


        def apply_discount(price: float) -> float:
            return price * (1 - DISCOUNT)
        ''',
    "shop/cart.py": '''
        import shop.pricing
        from shop.models import Item, make_item
        from .pricing import DISCOUNT


        class Cart:
            def __init__(self) -> None:
                self.items: list[Item] = []

            def add(self, name: str) -> None:
                item = make_item(name)
                self.items.append(item)

            def total(self) -> float:
                raw = sum(i.price for i in self.items)
                discounted = shop.pricing.apply_discount(raw)
                saving = raw * DISCOUNT
                return discounted if saving > 0 else raw
        ''',
    "scripts/report.py": '''
        from shop import Item


        def report(items: list[Item]) -> str:
            lines = [f"{i.name}: {i.price}" for i in items]
            return "\\n".join(lines)
        ''',
    "broken.py": "def oops(:\n",
}


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        path = tmp_path / "shoprepo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path / "shoprepo"


def _check_row(row: dict, repo: Path) -> None:
    rec = record_from_dict(row)  # schema-valid
    source = (repo / rec.file_path).read_text()
    lines = source.split("\n")
    assert lines[row["line_no"] - 1] == rec.next_line and rec.next_line.strip()
    assert rec.all_code == source
    before = lines[: row["line_no"] - 1]
    for imp in rec.import_statement.split("\n"):
        assert imp in before and imp not in rec.cropped_code.split("\n")
    kept = [ln for ln in before if ln not in rec.import_statement.split("\n")]
    assert "\n".join(kept).lstrip("\n").endswith(rec.cropped_code)
    assert rec.level in {name for _, name in LEVELS}
    assert row["token_num"] == approx_token_count(build_prompt(rec))
    if row["used_symbol"] is not None:
        assert rec.gold_snippet_index == 0
        assert row["used_symbol"].split(".")[0] in rec.next_line
    else:
        assert rec.gold_snippet_index is None
    for snippet in rec.context:
        assert (repo / snippet.path).is_file() and snippet.snippet in (repo / snippet.path).read_text()


def test_small_repo_records(repo):
    rows = build_records(repo, n=6, seed=0)
    assert 1 <= len(rows) <= 6
    for row in rows:
        _check_row(row, repo)
        assert row["repo_name"] == "shoprepo" and row["file_path"] in {"shop/cart.py", "scripts/report.py"}
    golds = {r["next_line"].strip(): r["context"][r["gold_snippet_index"]]["snippet"]
             for r in rows if r["gold_snippet_index"] >= 0}
    assert golds, "some target should use a cross-file symbol"
    for line, snippet in golds.items():
        if "make_item(" in line:
            assert snippet.startswith("def make_item")
        if "apply_discount" in line:  # `import shop.pricing` + attribute use: the attribute's definition
            assert snippet.startswith("def apply_discount")
        if "DISCOUNT" in line and "apply" not in line:
            assert snippet == "DISCOUNT = 0.1"


def test_re_exports_are_followed(repo):
    rows = [r for r in build_records(repo, n=50, seed=1) if r["file_path"] == "scripts/report.py"]
    assert rows
    snippets = [c["snippet"] for c in rows[0]["context"]]
    assert any(s.startswith("class Item:") for s in snippets)  # `from shop import Item` -> shop/models.py


def test_deterministic_by_seed(repo):
    assert build_records(repo, n=5, seed=3) == build_records(repo, n=5, seed=3)
    many = build_records(repo, n=50, seed=3)
    assert len({(r["file_path"], r["line_no"]) for r in many}) == len(many)  # no repeated target
    assert len(many) < 50  # the repository runs out of lines


def test_edit_simulation_invariant(repo):
    rows = build_records(repo, n=10, seed=2, edit_sim=True)
    kinds = set()
    for row in rows:
        edit = row["edit"]
        kinds.add(edit["kind"])
        before = edit["before_code"].split("\n")
        removed = edit["removed"].split("\n") if edit["removed"] else []
        inserted = edit["inserted"].split("\n") if edit["inserted"] else []
        s = edit["start_line"]
        assert before[:s] + inserted + before[s + len(removed):] == row["cropped_code"].split("\n")
        assert (edit["kind"] == "insert") == (not removed) and (edit["kind"] == "delete") == (not inserted)
        assert s < len(row["cropped_code"].split("\n")) - len(inserted) or edit["kind"] == "delete"
    assert len(kinds) >= 2


def test_write_and_load_back(repo, tmp_path):
    rows = build_records(repo, n=3, seed=0, edit_sim=True)
    out = tmp_path / "rb.jsonl"
    write_records(rows, out)
    records = load_repobench(out)
    assert [r.next_line for r in records] == [r["next_line"] for r in rows]
    assert records[0].edit == rows[0]["edit"]
    assert json.loads(out.read_text().splitlines()[0])["used_symbol"] == rows[0]["used_symbol"]


def test_level_buckets_and_misuse(tmp_path):
    assert [level_for(t) for t in (10, 2000, 2001, 9000, 200_000)] == ["2k", "2k", "4k", "12k", "128k+"]
    with pytest.raises(ValueError):
        build_records(tmp_path / "missing", n=1)
    with pytest.raises(ValueError):
        build_records(tmp_path, n=0)
    assert build_records(tmp_path, n=3) == []  # no Python files


def test_real_installed_package():
    rich = pytest.importorskip("rich")
    pkg = Path(rich.__file__).parent
    rows = build_records(pkg, n=5, seed=0, edit_sim=True)
    assert len(rows) == 5
    for row in rows:
        _check_row(row, pkg)
        assert row["context"] and row["edit"]["kind"] in {"insert", "delete", "replace"}
    assert sum(r["used_symbol"] is not None for r in rows) >= 3
