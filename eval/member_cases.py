"""Member-access cases from a real, typed package: the cursor right after ``receiver.``.

What it is: the cases of the monitor's measured table (``benchmarks/bench_monitor_repos.py``).
A case is a single-line statement of the package whose first ``name.member`` access has a
receiver the type checker knows — the completion is the rest of that line, written from right
after the dot, the member name first:

1. candidates: every simple statement on one line (``x = self.a.b(c)``, ``return obj.name``...)
   with an attribute access on a plain name, in files chosen in a seeded order;
2. the judge must be able to judge it: in one mypy run per file, each candidate's member is
   replaced by a probe name (``codedec_probe_N``), and a candidate is kept only when mypy reports
   ``attr-defined`` for its probe (the receiver is typed, not ``Any``, and has no ``__getattr__``)
   and the original line has no ``attr-defined`` error of its own.

    cases = member_cases(workspace / "rich", 20, seed=0, root=workspace)

What it is not: a sample of what people type most (``self.`` dominates typed code, so it
dominates the cases); the judge (``codedec_eval.judge``) does the scoring.
"""

from __future__ import annotations

import ast
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from codedec_eval.judge import Unparsable, member_errors

_SIMPLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)


@dataclass(frozen=True)
class MemberCase:
    """``path``: the file (absolute); ``line``: 1-based; ``prefix`` ends with ``receiver.``;
    ``suffix`` starts with the newline that ends the case's line; ``target``: the rest of the line."""

    id: str
    path: str
    line: int
    receiver: str
    member: str
    prefix: str
    suffix: str
    target: str

    def as_dict(self) -> dict:
        return asdict(self)


def candidates(text: str) -> list[tuple[int, int, str, str]]:
    """(line, column after the dot, receiver, member) of each one-line simple statement's first
    ``name.member`` access (1-based line, 0-based column)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines = text.split("\n")
    out = {}
    for stmt in ast.walk(tree):
        if not isinstance(stmt, _SIMPLE) or stmt.lineno != stmt.end_lineno:
            continue
        accesses = [n for n in ast.walk(stmt) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                    and n.value.lineno == n.lineno == stmt.lineno]
        if not accesses:
            continue
        first = min(accesses, key=lambda n: n.value.end_col_offset)
        line = lines[stmt.lineno - 1]
        # columns are UTF-8 byte offsets in ast; keep ASCII lines so they are character offsets too
        col = first.value.end_col_offset + 1
        if not line.isascii() or line[col - 1 : col] != "." or not line[col:].startswith(first.attr):
            continue
        out[stmt.lineno] = (stmt.lineno, col, first.value.id, first.attr)
    return [out[k] for k in sorted(out)]


def _probe(text: str, picks: list[tuple[int, int, str, str]]) -> str:
    lines = text.split("\n")
    for i, (row, col, _recv, member) in enumerate(picks):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + f"codedec_probe_{i}" + line[col + len(member):]
    return "\n".join(lines)


def member_cases(package: str | Path, n: int, *, seed: int = 0, root: str | Path | None = None,
                 per_file: int = 2, cache_dir: str | Path | None = None, log=None) -> list[MemberCase]:
    """Up to ``n`` cases from the ``.py`` files under ``package`` (see the module docstring), at
    most ``per_file`` per file, files and candidates in a ``seed``-ed order. ``root``: where mypy
    runs (the workspace that contains the package)."""
    package = Path(package).resolve()
    root = Path(root).resolve() if root else package.parent
    files = sorted(p for p in package.rglob("*.py") if "test" not in p.name)
    rng = random.Random(seed)
    rng.shuffle(files)
    cases: list[MemberCase] = []
    for path in files:
        if len(cases) >= n:
            break
        text = path.read_text(encoding="utf-8")
        found = candidates(text)
        if not found:
            continue
        rng.shuffle(found)
        picks = sorted(found[: 4 * per_file])
        try:
            probed = {e.name for e in member_errors(path, _probe(text, picks), root=root, cache_dir=cache_dir)}
            own = {e.line for e in member_errors(path, text, root=root, cache_dir=cache_dir)}
        except Unparsable:
            continue
        kept = [p for i, p in enumerate(picks) if f"codedec_probe_{i}" in probed and p[0] not in own]
        rng.shuffle(kept)
        lines = text.split("\n")
        for row, col, recv, member in sorted(kept[:per_file]):
            line = lines[row - 1]
            cases.append(MemberCase(
                id=f"{path.relative_to(root)}:{row}", path=str(path), line=row, receiver=recv, member=member,
                prefix="\n".join(lines[: row - 1] + [line[:col]]), suffix="\n" + "\n".join(lines[row:]),
                target=line[col:],
            ))
        if log:
            log(f"{path.relative_to(root)}: {len(found)} candidates, {len(kept)} judgeable")
    return cases[:n]
