"""Speculation on the embedded model and real files: greedy ``suffix`` writes exactly what plain
greedy writes, with and without the grammar, and drafts get accepted on the way.

Cursors at line starts inside functions of a pip-installed package (click), the rest of the
function removed (the user is writing it); 40 tokens each.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from codedec.engine import Engine
from codedec.prepare import prepare
from codedec.speculate.verify import SpecConfig, SuffixStrategy
from codedec.strategy import PlainStrategy

pytestmark = pytest.mark.usefixtures("one_thread")


def cursors(n: int) -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("click")
    if spec is None:
        pytest.skip("click is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "core.py"
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    funcs = [f for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef) and len(f.body) >= 4]
    for fn in funcs[:: max(1, len(funcs) // n)][:n]:
        line = fn.body[2].lineno  # 1-based: the body from its third statement on is removed
        indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
        prefix = "\n".join(lines[: line - 1] + [" " * indent])
        suffix = "\n" + "\n".join(lines[fn.end_lineno :])
        out.append((prefix[-6000:], suffix[:3000]))
    return out


def generate(engine, prefix, suffix, decoding, strategy):
    prepared = prepare(engine, prefix, suffix, max_tokens=40, decoding=decoding)
    steps = list(engine.generate(prepared.prompt_ids, prepared.params, prepared.chain, strategy))
    return [t for s in steps for t in s.token_ids], steps[-1].metrics.forwards


@pytest.mark.parametrize("decoding", ["", "grammar"])
def test_suffix_is_plain_greedy_on_real_files(smollm2, decoding):
    engine = Engine(smollm2)
    accepted = 0
    for i, (prefix, suffix) in enumerate(cursors(3)):
        want, forwards = generate(engine, prefix, suffix, decoding, PlainStrategy())
        refs = [want] if i % 2 == 0 else []  # as after an edit elsewhere: the previous completion
        strategy = SuffixStrategy(SpecConfig(adaptive=False), references=refs)
        got, spec_forwards = generate(engine, prefix, suffix, decoding, strategy)
        assert got == want, f"cursor {i}: speculation changed the completion"
        accepted += strategy.stats["accepted"]
        if refs:
            assert spec_forwards < forwards
    assert accepted > 10
