"""Cross-file context for a cursor, gathered from the workspace by the service itself.

What it is: ``RepositoryContext.gather(path, prefix, suffix)`` -> ``ContextChunk`` s in priority
order, from three sources (as llama.vim, Tabby and RepoCoder-style retrievers do, with
tree-sitter instead of regular expressions):

1. ``import``: the definitions of the names the current file imports from other workspace files
   (``from pkg.mod import name``; ``import pkg.mod as m`` with ``m.name`` used in the file;
   re-exports through a package ``__init__`` followed), in the order the file imports them;
2. ``recent``: a ring buffer of chunks of other files the user recently opened or edited
   (``note_open`` / ``note_edit``, as llama.vim's ring of extra context);
3. ``similar``: units (whole functions, methods, class headers) of the workspace files already
   looked at, ranked by the Jaccard similarity of their identifiers to the lines at the cursor.

Bounded: each request has a time budget (``budget_ms``); parsed files are cached per version
(modification time and size on disk; the text of an open document), the workspace's module index
is built by a walk resumed across requests, and a file that is unreadable, binary or over
``max_file_bytes`` is skipped with one log line — never an error for the user.

What it is not: fitting the chunks to a token budget (``codedec.context.compress``) or laying
them out in the prompt (``codedec.context.fim``).
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from codedec.context.outline import Import, Outline, Unit, outline

log = logging.getLogger(__name__)

ROOT_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg", ".hg")
SKIP_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".hg", ".tox", ".nox", ".venv", "venv", "env",
                       "build", "dist", "site-packages", ".mypy_cache", ".pytest_cache", ".eggs"})
MAX_FILE_BYTES = 1_000_000
MAX_FILES = 20_000  # the module index stops growing here
RING_SIZE = 16  # recent chunks kept (llama.vim keeps 16 too)
RING_LINES = 64  # lines per recent chunk
CURSOR_LINES = 12  # lines before the cursor that the similarity ranking compares against
MAX_SIMILAR = 4
MIN_SIMILARITY = 0.08
REEXPORT_DEPTH = 3
OUTLINE_CACHE = 512  # parsed files kept
# an import statement: its first line, and its continuation lines while a parenthesis is open
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import[ \t]*\([^)]*\)|(?:from[ \t]+[\w.]+[ \t]+)?import[ \t][^\n]*)[^\n]*\n?",
                          re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOISE = frozenset({"self", "cls", "def", "return", "if", "else", "elif", "for", "in", "not", "and", "or",
                    "is", "None", "True", "False", "import", "from", "as", "class", "with", "try", "except",
                    "raise", "pass", "while", "lambda", "yield", "assert", "del", "global", "nonlocal"})


@dataclass(frozen=True)
class ContextChunk:
    """A piece of another file for the prompt. ``path``: as shown to the model (relative to the
    workspace); ``kind``: ``import``, ``recent``, ``similar`` or ``given`` (supplied by the client);
    ``name``: what it defines ("" if nothing in particular); ``line``: its first line (0-based)."""

    path: str
    text: str
    kind: str
    name: str = ""
    line: int = 0


def find_root(path: str | os.PathLike) -> Path:
    """The workspace of a file: the nearest ancestor directory with a project marker
    (``.git``, ``pyproject.toml``, ...) below any ``site-packages``; for an installed package
    (or without a marker) its topmost package directory (the top of its ``__init__.py`` chain),
    else the file's directory."""
    here = Path(path).resolve().parent
    for d in (here, *here.parents):
        if d.name in ("site-packages", "dist-packages"):
            break
        if any((d / m).exists() for m in ROOT_MARKERS):
            return d
    top = here
    while (top.parent / "__init__.py").exists() and top.parent.parent != top.parent:
        top = top.parent
    return top


def identifiers(text: str) -> frozenset[str]:
    """The identifiers of ``text`` minus keywords and ``self`` (the similarity features)."""
    return frozenset(_IDENT.findall(text)) - _NOISE


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class _Deadline:
    def __init__(self, budget_ms: float | None) -> None:
        self.end = None if budget_ms is None else time.perf_counter() + budget_ms / 1000.0

    def passed(self) -> bool:
        return self.end is not None and time.perf_counter() > self.end


class Workspace:
    """The Python files under ``root``: module names -> paths, and parsed outlines per file version.

    ``read_override(path) -> str | None`` gives the text of a document the editor has open (its
    unsaved text wins over the disk).
    """

    def __init__(self, root: str | os.PathLike, *, max_file_bytes: int = MAX_FILE_BYTES,
                 read_override: Callable[[str], str | None] | None = None) -> None:
        self.root = Path(root).resolve()
        self.max_file_bytes = max_file_bytes
        self.read_override = read_override or (lambda _p: None)
        self._modules: dict[str, str] = {}  # dotted module name -> file path
        self._walker: Iterator[str] | None = self._walk()
        self._files = 0
        self._texts: OrderedDict[str, tuple[object, str]] = OrderedDict()  # path -> (version, text)
        self._outlines: OrderedDict[str, tuple[object, Outline]] = OrderedDict()
        # the prompt shows paths relative to the root (its parent when the root is a package: click/core.py)
        self._display_base = self.root.parent if (self.root / "__init__.py").exists() else self.root
        self._skipped: set[str] = set()
        self._unit_idents: dict[tuple[str, int], frozenset[str]] = {}

    # ---- module index

    def _walk(self) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=lambda e: log.info("skipping %s", e)):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)

    def index(self, deadline: _Deadline | None = None) -> bool:
        """Grow the module index until done or ``deadline``; True once every file is indexed."""
        while self._walker is not None:
            if deadline is not None and deadline.passed():
                return False
            path = next(self._walker, None)
            if path is None or self._files >= MAX_FILES:
                if path is not None:
                    log.info("workspace %s: indexing stopped at %d Python files", self.root, MAX_FILES)
                self._walker = None
                break
            self._files += 1
            for name in module_names(path, self.root):
                self._modules.setdefault(name, path)
        return True

    def display(self, path: str) -> str:
        """``path`` as the prompt shows it: relative to the root (to its parent when the root
        is a package itself, so ``click/core.py``)."""
        try:
            return Path(path).resolve().relative_to(self._display_base).as_posix()
        except ValueError:
            return Path(path).name

    # ---- files

    def text(self, path: str) -> str | None:
        """The file's text (an open document's own), or None when it is unreadable, binary or
        too big (logged once per file); read once per version."""
        version = self._version(path)
        if version is None:
            return None
        if version[0] == "open":
            return version[1]
        cached = self._texts.get(path)
        if cached is not None and cached[0] == version:
            self._texts.move_to_end(path)
            return cached[1]
        text = self._read(path)
        if text is not None:
            self._texts[path] = (version, text)
            while len(self._texts) > OUTLINE_CACHE:
                self._texts.popitem(last=False)
        return text

    def _read(self, path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                data = f.read(self.max_file_bytes + 1)
        except OSError as err:
            self._skip(path, f"unreadable ({err.strerror or err})")
            return None
        if len(data) > self.max_file_bytes:
            self._skip(path, f"over {self.max_file_bytes} bytes")
            return None
        if b"\0" in data:
            self._skip(path, "binary")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._skip(path, "not UTF-8")
            return None

    def _skip(self, path: str, why: str) -> None:
        if path not in self._skipped:
            self._skipped.add(path)
            log.info("repository context: skipping %s: %s", path, why)

    def _version(self, path: str) -> tuple | None:
        """("open", text) for an open document, (mtime, size) on disk, None when it is gone."""
        override = self.read_override(path)
        if override is not None:
            return ("open", override)
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def outline(self, path: str) -> Outline | None:
        """The file's outline, parsed once per version (None when the file cannot be read)."""
        version = self._version(path)
        cached = self._outlines.get(path)
        if cached is not None and cached[0] == version:
            self._outlines.move_to_end(path)
            return cached[1]
        text = self.text(path) if version is not None else None
        if text is None:
            return None
        parsed = outline(text)
        self._outlines[path] = (version, parsed)
        while len(self._outlines) > OUTLINE_CACHE:
            self._outlines.popitem(last=False)
        return parsed

    def looked_at(self) -> list[str]:
        """Files parsed so far, most recently used last."""
        return list(self._outlines)

    def unit_identifiers(self, path: str, unit: Unit) -> frozenset[str]:
        key = (path, hash(unit.text))
        ids = self._unit_idents.get(key)
        if ids is None:
            if len(self._unit_idents) > 16 * OUTLINE_CACHE:
                self._unit_idents.clear()
            ids = self._unit_idents[key] = identifiers(unit.text)
        return ids

    # ---- imports

    def resolve(self, importer: str, imp: Import) -> str | None:
        """The workspace file ``imp`` (as written in ``importer``) refers to, or None."""
        if imp.level:
            base = Path(importer).parent
            for _ in range(imp.level - 1):
                base = base.parent
            rel = Path(*imp.module.split(".")) if imp.module else Path()
            for candidate in (base / rel.with_suffix(".py") if imp.module else None, base / rel / "__init__.py"):
                if candidate is not None and candidate.is_file():
                    return str(candidate)
            return None
        return self._modules.get(imp.module)


def module_names(path: str, root: Path) -> list[str]:
    """Dotted names ``path`` can be imported as: from the directory above its topmost package,
    and relative to ``root`` (``src/pkg/mod.py`` -> ``pkg.mod`` and ``src.pkg.mod``)."""
    p = Path(path)
    parts = [p.stem] if p.name != "__init__.py" else []
    d = p.parent
    while (d / "__init__.py").exists() and d != root.parent:
        parts.insert(0, d.name)
        d = d.parent
    names = [".".join(parts)] if parts else []
    try:
        rel = p.relative_to(root).with_suffix("")
        dotted = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if dotted and dotted not in names:
            names.append(dotted)
    except ValueError:
        pass
    return [n for n in names if n and all(part.isidentifier() for part in n.split("."))]


class RecentChunks:
    """A ring of chunks of files the user opened or edited (newest last; one per file region)."""

    def __init__(self, size: int = RING_SIZE, lines: int = RING_LINES) -> None:
        self.size, self.lines = size, lines
        self._ring: deque[tuple[str, int, int]] = deque()  # (path, first line, end line)

    def note(self, path: str, line: int, n_lines: int) -> None:
        """The user was at ``line`` of ``path`` (a file of ``n_lines`` lines): remember the
        ``lines`` around it, replacing an overlapping chunk of the same file."""
        start = max(0, min(line - self.lines // 2, n_lines - self.lines))
        end = min(n_lines, start + self.lines)
        kept = [c for c in self._ring if not (c[0] == path and c[1] < end and start < c[2])]
        self._ring = deque(kept[-(self.size - 1):] if self.size > 1 else [])
        self._ring.append((path, start, end))

    def chunks(self) -> list[tuple[str, int, int]]:
        return list(self._ring)


class RepositoryContext:
    """Cross-file context for the files of one workspace (module docstring)."""

    def __init__(self, root: str | os.PathLike, *, read_override: Callable[[str], str | None] | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.workspace = Workspace(root, read_override=read_override, max_file_bytes=max_file_bytes)
        self.recent = RecentChunks()
        self._import_cache: tuple[str, Outline] | None = None

    def note_open(self, path: str, text: str) -> None:
        self.recent.note(os.path.abspath(path), 0, text.count("\n") + 1)

    def note_edit(self, path: str, text: str, offset: int) -> None:
        self.recent.note(os.path.abspath(path), text.count("\n", 0, offset), text.count("\n") + 1)

    def gather(self, path: str, prefix: str, suffix: str = "", *, budget_ms: float | None = 50.0,
               max_similar: int = MAX_SIMILAR) -> list[ContextChunk]:
        """Chunks for the cursor between ``prefix`` and ``suffix`` of ``path``, priority order:
        imported definitions, recent chunks, similar units (module docstring). Stops early (with
        what it has) when ``budget_ms`` is spent."""
        deadline = _Deadline(budget_ms)
        path = os.path.abspath(path)
        self.workspace.index(deadline)
        text = prefix + suffix
        current = self._imports_of(text)
        seen: set[tuple[str, int]] = set()
        out: list[ContextChunk] = []
        for chunk in self._imported(path, current, text, deadline):
            if (chunk.path, chunk.line) not in seen:
                seen.add((chunk.path, chunk.line))
                out.append(chunk)
        if not deadline.passed():
            out += self._recent(path, seen)
        if not deadline.passed() and max_similar > 0:
            out += self._similar(path, prefix, seen, deadline, max_similar)
        return out

    def _imports_of(self, text: str) -> Outline:
        """The outline of ``text``'s import lines only (cached): the file being typed in changes
        at every keystroke, its imports rarely."""
        block = "".join(m.group(0) for m in _IMPORT_LINE.finditer(text))
        cached = self._import_cache
        if cached is None or cached[0] != block:
            cached = self._import_cache = (block, outline(textwrap.dedent(block)))
        return cached[1]

    def _imported(self, path: str, current: Outline, text: str, deadline: _Deadline) -> Iterator[ContextChunk]:
        ws = self.workspace
        for imp in current.imports:
            if deadline.passed():
                return
            target = ws.resolve(path, imp)
            if imp.names:
                for name, _alias in imp.names:
                    if name == "*":
                        continue
                    sub = ws.resolve(path, Import(f"{imp.module}.{name}" if imp.module else name, imp.level))
                    if sub is not None and sub != path:  # `from pkg import module`: its used members
                        yield from self._members(sub, _alias, text)
                    elif target is not None and target != path:
                        yield from self._definition(target, name, REEXPORT_DEPTH)
            elif target is not None and target != path and imp.alias:
                used = imp.module if imp.alias == imp.module.split(".")[0] else imp.alias
                yield from self._members(target, used, text)

    def _members(self, module_path: str, alias: str, text: str) -> Iterator[ContextChunk]:
        """Definitions in ``module_path`` that ``text`` uses as ``alias.name``."""
        names = dict.fromkeys(re.findall(rf"(?<![\w.]){re.escape(alias)}\.([A-Za-z_]\w*)", text))
        for name in names:
            yield from self._definition(module_path, name, REEXPORT_DEPTH)

    def _definition(self, module_path: str, name: str, depth: int) -> Iterator[ContextChunk]:
        parsed = self.workspace.outline(module_path)
        if parsed is None:
            return
        units = parsed.definition(name)
        if units:
            shown = self.workspace.display(module_path)
            for unit in units:
                yield ContextChunk(shown, unit.text, "import", unit.name, unit.start)
            return
        if depth <= 0:
            return
        for imp in parsed.imports:  # a re-export: `from .core import name` in a package __init__
            if any(n == name or a == name for n, a in imp.names):
                original = next(n for n, a in imp.names if n == name or a == name)
                target = self.workspace.resolve(module_path, imp)
                if target is not None and target != module_path:
                    yield from self._definition(target, original, depth - 1)
                return

    def _recent(self, path: str, seen: set[tuple[str, int]]) -> list[ContextChunk]:
        out = []
        for file, start, end in reversed(self.recent.chunks()):  # newest first
            if file == path:
                continue
            text = self.workspace.text(file)
            if text is None:
                continue
            lines = text.split("\n")[start:end]
            if not any(line.strip() for line in lines):
                continue
            key = (self.workspace.display(file), start)
            if key in seen:
                continue
            seen.add(key)
            out.append(ContextChunk(key[0], "\n".join(lines) + "\n", "recent", "", start))
        return out

    def _similar(self, path: str, prefix: str, seen: set[tuple[str, int]], deadline: _Deadline,
                 k: int) -> list[ContextChunk]:
        window = identifiers("\n".join(prefix.split("\n")[-CURSOR_LINES:]))
        if not window:
            return []
        ws = self.workspace
        scored: list[tuple[float, str, int, Unit]] = []
        same_dir = [str(p) for p in sorted(Path(path).parent.glob("*.py"))][:64]
        for file in dict.fromkeys([*ws.looked_at(), *same_dir]):
            if deadline.passed():
                break
            if file == path:
                continue
            parsed = ws.outline(file)
            if parsed is None:
                continue
            shown = ws.display(file)
            for unit in parsed.units:
                if (shown, unit.start) in seen or unit.kind == "statements":
                    continue
                score = jaccard(window, ws.unit_identifiers(file, unit))
                if score >= MIN_SIMILARITY:
                    scored.append((score, shown, unit.start, unit))
        scored.sort(key=lambda s: (-s[0], s[1], s[2]))
        return [ContextChunk(shown, unit.text, "similar", unit.name, start) for _, shown, start, unit in scored[:k]]


class Repositories:
    """``RepositoryContext`` per workspace root (what the service keeps); the editor's open
    documents (``documents``: path -> text) override the disk."""

    def __init__(self, documents: Mapping[str, str] | Callable[[str], str | None] | None = None,
                 max_roots: int = 4) -> None:
        self._read = documents.get if isinstance(documents, Mapping) else documents
        self._contexts: OrderedDict[Path, RepositoryContext] = OrderedDict()
        self._roots: OrderedDict[Path, Path] = OrderedDict()  # a file's directory -> its root
        self._lock = threading.Lock()  # editor threads note edits, the engine's worker gathers
        self.max_roots = max_roots

    def for_path(self, path: str) -> RepositoryContext:
        """The context of ``path``'s workspace (``find_root``; made on first use, the least
        recently used dropped past ``max_roots``)."""
        folder = Path(os.path.abspath(path)).parent
        with self._lock:
            root = self._roots.get(folder)
        if root is None:
            root = find_root(path)
        with self._lock:
            self._roots[folder] = root
            if len(self._roots) > 256:
                self._roots.popitem(last=False)
            ctx = self._contexts.get(root)
            if ctx is None:
                ctx = self._contexts[root] = RepositoryContext(root, read_override=self._read)
                while len(self._contexts) > self.max_roots:
                    self._contexts.popitem(last=False)
            self._contexts.move_to_end(root)
            return ctx
