"""Build RepoBench-style next-line records from any local Python repository.

For users who want a test set from their own code (and for us: a set the model cannot
have memorized from the public RepoBench). The output rows have the RepoBench v1.1 schema
read by :func:`codedec_eval.repobench.load_repobench`, plus a few fields of ours:

* ``token_num`` — prompt size (by ``count_tokens``) that ``level`` buckets;
* ``used_symbol`` — the cross-file name the target line uses (None: an in-file line);
* ``line_no`` — 1-based line of ``next_line`` in ``file_path``;
* ``edit`` — only with ``edit_sim=True``: a simulated earlier edit before the cursor, as in
  the PIE paper's setting (He et al. 2024, "Let the Code LLM Edit Itself When You Edit the
  Code"): the user changed some lines of ``cropped_code`` shortly before asking for the
  completion, so an edit-aware KV cache can reuse the cache of the pre-edit text::

      {"kind": "insert" | "delete" | "replace",
       "before_code": <cropped_code as it was before the edit>,
       "start_line": <0-based line in both texts where they start to differ>,
       "removed": <the lines of before_code replaced, "\\n"-joined; "" for insert>,
       "inserted": <the lines of cropped_code put there; "" for delete>}

  Invariant: ``before_lines[:s] + inserted_lines + before_lines[s + len(removed_lines):]
  == cropped_lines`` (``s = start_line``; "lines" = ``text.split("\\n")``, an empty field
  meaning no lines). To evaluate: prefill the prompt built with ``before_code``, apply
  the edit, complete at the cursor.

Algorithm (deterministic for a given ``seed``): index the repository's ``.py`` files by
module name (package-based and root-relative); resolve every import of a file to modules
of the repo (absolute, relative, ``import a.b``; following re-exports through package
``__init__`` files); a file qualifies when some imported symbol's definition can be found.
Target lines are non-trivial code lines after the first import, preferring lines that use
a cross-file symbol; files are taken round-robin in a seeded order. ``context`` holds the
definitions of the file's cross-file symbols, the one the target uses first
(``gold_snippet_index`` 0, or -1 when the line uses none).
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import logging
import random
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedec_eval.repobench import RepoBenchRecord, Snippet, build_prompt, record_to_dict

log = logging.getLogger(__name__)

LEVELS = ((2_000, "2k"), (4_000, "4k"), (8_000, "8k"), (12_000, "12k"), (16_000, "16k"),
          (24_000, "24k"), (32_000, "32k"), (64_000, "64k"), (128_000, "128k"))
_SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "site-packages", "venv", "env"}
_TRIVIAL = re.compile(r"^[\s()\[\]{}:,;.]*$|^(else|try|finally|pass|break|continue|return|raise)\s*:?$")
_MAX_FILE_BYTES = 400_000


def approx_token_count(text: str) -> int:
    """A tokenizer-free estimate of BPE tokens in code: identifiers/numbers and punctuation."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def level_for(tokens: int) -> str:
    """RepoBench-style bucket: the smallest of 2k, 4k, 8k, ... 128k that holds ``tokens``."""
    return next((name for limit, name in LEVELS if tokens <= limit), "128k+")


@dataclass(frozen=True)
class _Import:
    local: str  # the name bound in the importing file ("a.b" for a plain `import a.b`)
    module: str  # the repo module it resolves to
    symbol: str | None  # the name inside that module; None: the module itself


@dataclass
class _Module:
    rel: str
    name: str | None
    lines: list[str]
    tree: ast.Module
    defs: dict[str, ast.stmt] = field(default_factory=dict)
    import_lines: set[int] = field(default_factory=set)  # 1-based, top-level import statements
    imports: list[_Import] = field(default_factory=list)
    names_by_line: dict[int, set[str]] = field(default_factory=dict)
    string_lines: set[int] = field(default_factory=set)  # inside (or ending) a multi-line string


# ---------------------------------------------------------------- indexing


def _module_names(path: Path, root: Path) -> list[str]:
    names, parts, d = [], ([] if path.name == "__init__.py" else [path.stem]), path.parent
    while (d / "__init__.py").exists() and d.parent != d:
        parts.insert(0, d.name)
        d = d.parent
    if parts:
        names.append(".".join(parts))
    rel = list(path.relative_to(root).with_suffix("").parts)
    if rel and rel[-1] == "__init__":
        rel.pop()
    for cut in (0, 1) if rel[:1] == ["src"] else (0,):
        if rel[cut:]:
            names.append(".".join(rel[cut:]))
    return list(dict.fromkeys(names))


def _parse(path: Path, root: Path) -> _Module | None:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return None
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    names = _module_names(path, root)
    mod = _Module(rel=path.relative_to(root).as_posix(), name=names[0] if names else None,
                  lines=source.split("\n"), tree=tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            mod.defs.setdefault(node.name, node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    mod.defs.setdefault(target.id, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod.import_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return mod


def _tokenize(mod: _Module) -> bool:
    """Fill ``names_by_line`` and ``string_lines`` (done only for files that are visited)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(mod.lines)).readline):
            if tok.type == tokenize.NAME:
                mod.names_by_line.setdefault(tok.start[0], set()).add(tok.string)
            elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                mod.string_lines.update(range(tok.start[0] + 1, tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        return False
    return True


def _index(repo: Path) -> tuple[dict[str, _Module], list[_Module]]:
    by_name: dict[str, _Module] = {}
    modules = []
    for path in sorted(repo.rglob("*.py")):
        rel_parts = path.relative_to(repo).parts
        if any(p.startswith(".") or p in _SKIP_DIRS for p in rel_parts[:-1]):
            continue
        mod = _parse(path, repo)
        if mod is None:
            continue
        modules.append(mod)
        for name in _module_names(path, repo):
            by_name.setdefault(name, mod)
    for mod in modules:
        mod.imports = _resolve_imports(mod, by_name)
    return by_name, modules


def _import_nodes(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports at module level, also inside top-level ``if``/``try`` blocks."""
    nodes: list[ast.Import | ast.ImportFrom] = []
    for node in tree.body:
        inner = [node]
        if isinstance(node, (ast.If, ast.Try)):
            inner = node.body + node.orelse + getattr(node, "finalbody", [])
        nodes += [n for n in inner if isinstance(n, (ast.Import, ast.ImportFrom))]
    return nodes


def _resolve_imports(mod: _Module, by_name: dict[str, _Module]) -> list[_Import]:
    out = []
    is_package = mod.rel.endswith("__init__.py")
    for node in _import_nodes(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in by_name and by_name[alias.name] is not mod:
                    out.append(_Import(alias.asname or alias.name, alias.name, None))
            continue
        base = node.module or ""
        if node.level:
            if mod.name is None:
                continue
            package = mod.name.split(".") if is_package else mod.name.split(".")[:-1]
            if node.level - 1 > len(package):
                continue
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        for alias in node.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name
            sub = f"{base}.{alias.name}" if base else alias.name
            if sub in by_name and by_name[sub] is not mod:
                out.append(_Import(local, sub, None))
            elif base in by_name and by_name[base] is not mod:
                out.append(_Import(local, base, alias.name))
    return out


# ---------------------------------------------------------------- snippets


def _definition(by_name: dict[str, _Module], module: str, symbol: str | None,
                max_lines: int, depth: int = 0) -> Snippet | None:
    """The source of ``symbol`` in ``module`` (following re-exports), or the module's head."""
    mod = by_name.get(module)
    if mod is None:
        return None
    if symbol is None:
        head = [ln for ln in mod.lines[:max_lines]]
        return Snippet(mod.rel, "\n".join(head).rstrip()) if any(s.strip() for s in head) else None
    node = mod.defs.get(symbol)
    if node is not None:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        end = min(node.end_lineno or node.lineno, start + max_lines - 1)
        return Snippet(mod.rel, "\n".join(mod.lines[start - 1:end]).rstrip())
    if depth < 3:
        for imp in mod.imports:
            if imp.local == symbol:
                return _definition(by_name, imp.module, imp.symbol, max_lines, depth + 1)
    return None


# ---------------------------------------------------------------- targets


def _uses(mod: _Module, line_no: int, imp: _Import) -> bool:
    names = mod.names_by_line.get(line_no, set())
    if "." in imp.local:  # `import a.b` binds "a"; usage is spelled a.b.x
        return imp.local.split(".")[0] in names and re.search(rf"\b{re.escape(imp.local)}\.", mod.lines[line_no - 1]) is not None
    return imp.local in names


def _attribute_used(line: str, local: str) -> str | None:
    m = re.search(rf"\b{re.escape(local)}\.(\w+)", line)
    return m.group(1) if m else None


def _candidate_lines(mod: _Module) -> list[int]:
    """1-based lines that make a sensible target: real code after the first import."""
    first_import = min(mod.import_lines, default=len(mod.lines) + 1)
    out = []
    for no in range(first_import + 1, len(mod.lines) + 1):
        text = mod.lines[no - 1].strip()
        if (no in mod.import_lines or no in mod.string_lines or not text or text.startswith(("#", '"', "'"))
                or len(text) < 6 or _TRIVIAL.match(text)):
            continue
        names = mod.names_by_line.get(no, set())
        if not any(not keyword.iskeyword(n) for n in names):
            continue
        out.append(no)
    return out


def _cropped(mod: _Module, line_no: int) -> list[str]:
    kept = [ln for i, ln in enumerate(mod.lines[: line_no - 1], start=1) if i not in mod.import_lines]
    while kept and not kept[0].strip():
        kept.pop(0)
    return kept


def _simulate_edit(cropped: list[str], donor: list[str], rng: random.Random) -> dict[str, Any] | None:
    """A plausible earlier edit of ``cropped`` (see the module docstring for the fields)."""
    if len(cropped) < 3:
        return None
    kind = rng.choice(["insert", "delete", "replace"])
    start = rng.randrange(0, len(cropped) - 1)  # leave at least one line after the edit
    span = rng.randint(1, min(5, len(cropped) - 1 - start))
    pool = [ln for ln in donor if ln.strip()] or ["pass"]
    at, size = rng.randrange(0, len(pool)), rng.randint(1, 5)
    other = (pool[at:] + pool[:at])[:size]  # lines from elsewhere in the file: plausible old code
    if kind == "insert":  # the user typed cropped[start:start+span]
        removed, inserted = [], cropped[start:start + span]
    elif kind == "delete":  # the user deleted lines that are no longer there
        removed, inserted = other, []
    else:  # the user rewrote some lines
        removed, inserted = other, cropped[start:start + span]
        if removed == inserted:
            removed = [f"{ln}  # old" if ln.strip() else "pass  # old" for ln in removed]
    before = cropped[:start] + removed + cropped[start + len(inserted):]
    return {"kind": kind, "before_code": "\n".join(before), "start_line": start,
            "removed": "\n".join(removed), "inserted": "\n".join(inserted)}


def build_records(repo_dir: str | Path, n: int, seed: int = 0, edit_sim: bool = False, *,
                  count_tokens: Callable[[str], int] | None = None, repo_name: str | None = None,
                  max_snippets: int = 8, max_snippet_lines: int = 40) -> list[dict[str, Any]]:
    """Up to ``n`` next-line records (dicts in the RepoBench v1.1 schema) from ``repo_dir``.

    Fewer when the repository has fewer usable lines (logged). ``count_tokens`` sizes the
    prompt for ``level``/``token_num`` (default :func:`approx_token_count`). Raises
    ValueError if ``repo_dir`` is not a directory or ``n`` < 1.
    """
    repo = Path(repo_dir).resolve()
    if not repo.is_dir():
        raise ValueError(f"repo_dir {str(repo_dir)!r} is not a directory")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = count_tokens or approx_token_count
    rng = random.Random(seed)
    by_name, modules = _index(repo)
    files = [mod for mod in modules if mod.imports]
    rng.shuffle(files)
    plans: list[tuple[_Module, list[_Import], dict[_Import, Snippet | None], list[int]]] = []
    rows: list[dict[str, Any]] = []
    # round 0 visits files lazily (a big repository needs only the first n usable ones)
    for mod in files:
        if len(rows) >= n:
            return rows
        plan = _plan(mod, by_name, rng, edit_sim, max_snippet_lines)
        if plan is not None:
            plans.append(plan)
            rows.append(_make_row(repo, repo_name, *plan[:3], plan[3][0], by_name, rng, count, edit_sim,
                                  max_snippets, max_snippet_lines))
    for round_ in range(1, max((len(p[3]) for p in plans), default=0)):
        for mod, imports, snippets, targets in plans:
            if len(rows) >= n:
                return rows
            if round_ < len(targets):
                rows.append(_make_row(repo, repo_name, mod, imports, snippets, targets[round_], by_name, rng,
                                      count, edit_sim, max_snippets, max_snippet_lines))
    if len(rows) < n:
        log.info("build_records: %s yields only %d of %d records", repo, len(rows), n)
    return rows


def _plan(mod: _Module, by_name: dict[str, _Module], rng: random.Random, edit_sim: bool,
          max_snippet_lines: int) -> tuple[_Module, list[_Import], dict[_Import, Snippet | None], list[int]] | None:
    """The usable imports, their snippets and the ordered target lines of ``mod`` (None: unusable)."""
    snippets = {imp: _definition(by_name, imp.module, imp.symbol, max_snippet_lines) for imp in mod.imports}
    imports = [imp for imp in mod.imports if snippets[imp] is not None]
    if not imports or not _tokenize(mod):
        return None
    lines = [no for no in _candidate_lines(mod) if not edit_sim or len(_cropped(mod, no)) >= 3]
    if not lines:
        return None
    cross = [no for no in lines if any(_uses(mod, no, imp) for imp in imports)]
    cross_set = set(cross)
    rest = [no for no in lines if no not in cross_set]
    rng.shuffle(cross)
    rng.shuffle(rest)
    return mod, imports, snippets, cross + rest


def _make_row(repo: Path, repo_name: str | None, mod: _Module, imports: list[_Import],
              snippets: dict[_Import, Snippet | None], line_no: int, by_name: dict[str, _Module],
              rng: random.Random, count: Callable[[str], int], edit_sim: bool, max_snippets: int,
              max_snippet_lines: int) -> dict[str, Any]:
    used = next((imp for imp in imports if _uses(mod, line_no, imp)), None)
    gold: Snippet | None = None
    if used is not None:
        gold = snippets[used]
        attr = _attribute_used(mod.lines[line_no - 1], used.local) if used.symbol is None else None
        if attr is not None:  # `mod.attr` usage: the attribute's definition is the better gold
            gold = _definition(by_name, used.module, attr, max_snippet_lines) or gold
    others = list(dict.fromkeys(s for s in (snippets[i] for i in imports) if s is not None and s != gold))
    rng.shuffle(others)
    context = ([gold] if gold else []) + others[: max_snippets - (1 if gold else 0)]
    cropped = _cropped(mod, line_no)
    import_statement = "\n".join(mod.lines[i - 1] for i in sorted(mod.import_lines))
    record = RepoBenchRecord(
        repo_name=repo_name or repo.name, file_path=mod.rel, context=tuple(context),
        import_statement=import_statement, cropped_code="\n".join(cropped),
        next_line=mod.lines[line_no - 1], level="", gold_snippet_index=0 if gold else None,
        all_code="\n".join(mod.lines),
        edit=_simulate_edit(cropped, mod.lines, rng) if edit_sim else None,
        extra={"used_symbol": used.local if used else None, "line_no": line_no})
    tokens = count(build_prompt(record))
    row = record_to_dict(record)
    row.update(level=level_for(tokens), token_num=tokens)
    return row


def write_records(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows as JSONL (UTF-8, one object per line)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
