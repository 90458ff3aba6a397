"""Python source -> its imports and its units (whole definitions), with tree-sitter.

What it is: the one place where cross-file context reads Python structure.
``outline(text)`` returns an ``Outline``:

* ``imports``: every ``import``/``from ... import`` at any depth (module, level of relativity,
  the names bound and what they refer to);
* ``units``: the file cut into consecutive whole pieces at line boundaries — each top-level
  function, class method, class header (the ``class`` line and what precedes the first method),
  other statements grouped — such that ``"".join(u.text for u in units) == text``. Comments and
  decorators directly above a definition belong to it; blank lines after a unit belong to it.

A file tree-sitter cannot fully parse still outlines (its error nodes become statement units).
What it is not: name resolution across files (``codedec.context.repository``) or scoring
(``codedec.context.longcodezip``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Import:
    """``from <module> import name as alias`` (``names``: (name, alias) pairs; ``("*", "*")`` for a
    wildcard) or ``import <module> as alias`` (``names`` empty, ``alias`` the bound name: the
    first component for ``import a.b``). ``level``: leading dots of a relative import."""

    module: str
    level: int = 0
    names: tuple[tuple[str, str], ...] = ()
    alias: str = ""


@dataclass(frozen=True)
class Unit:
    """Lines ``[start, end)`` of the file. ``kind``: ``function``, ``class`` (a class header),
    ``method``, ``assignment`` or ``statements``; ``name``: the defined name (``Class.method``
    for a method; "" for statements); ``text``: those lines, newlines included."""

    start: int
    end: int
    kind: str
    name: str
    text: str


@dataclass(frozen=True)
class Outline:
    imports: tuple[Import, ...]
    units: tuple[Unit, ...]

    def definition(self, name: str) -> list[Unit]:
        """The units that define top-level ``name`` (a class: its header and its methods)."""
        return [u for u in self.units if u.name == name or u.name.startswith(name + ".")]


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_python

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _definition(node):
    """The function/class node of ``node`` (through a decorator), or None."""
    if node.type == "decorated_definition":
        node = node.child_by_field_name("definition")
    return node if node is not None and node.type in ("function_definition", "class_definition") else None


def _assigned_name(node) -> str:
    """The simple name a top-level ``x = ...`` / ``x: T = ...`` binds ("" otherwise)."""
    if node.type != "expression_statement" or not node.named_children:
        return ""
    inner = node.named_children[0]
    if inner.type != "assignment":
        return ""
    left = inner.child_by_field_name("left")
    return _text(left) if left is not None and left.type == "identifier" else ""


def _imports(root) -> list[Import]:
    out: list[Import] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "import_statement":
            for child in node.named_children:
                if child.type == "dotted_name":
                    name = _text(child)
                    out.append(Import(name, alias=name.split(".")[0]))
                elif child.type == "aliased_import":
                    name, alias = child.child_by_field_name("name"), child.child_by_field_name("alias")
                    out.append(Import(_text(name), alias=_text(alias) if alias is not None else ""))
        elif node.type == "import_from_statement":
            module = node.child_by_field_name("module_name")
            level, dotted = 0, ""
            if module is not None and module.type == "relative_import":
                for part in module.named_children:
                    if part.type == "import_prefix":
                        level = len(_text(part).strip())
                    elif part.type == "dotted_name":
                        dotted = _text(part)
            elif module is not None:
                dotted = _text(module)
            names: list[tuple[str, str]] = []
            for child in node.children_by_field_name("name"):
                if child.type == "dotted_name":
                    names.append((_text(child), _text(child)))
                elif child.type == "aliased_import":
                    name, alias = child.child_by_field_name("name"), child.child_by_field_name("alias")
                    names.append((_text(name), _text(alias) if alias is not None else _text(name)))
            if any(c.type == "wildcard_import" for c in node.children):
                names.append(("*", "*"))
            out.append(Import(dotted, level, tuple(names)))
        else:
            stack.extend(reversed(node.children))
    return out


def _starts(root, n_lines: int) -> list[tuple[int, str, str]]:
    """(first line, kind, name) of each unit, in order; a comment run attaches to what follows."""
    starts: list[tuple[int, str, str]] = []
    pending_comment: int | None = None  # first line of a comment run directly above the next node
    prev_end = -1
    for node in root.children:
        row, end = node.start_point.row, node.end_point.row
        if node.type == "comment":
            if pending_comment is None or row > prev_end + 1:
                pending_comment = row
            prev_end = end
            continue
        first = pending_comment if pending_comment is not None and row <= prev_end + 1 else row
        pending_comment = None
        prev_end = end
        definition = _definition(node)
        if definition is not None and definition.type == "class_definition":
            name = _text(definition.child_by_field_name("name"))
            starts.append((first, "class", name))
            body = definition.child_by_field_name("body")
            for member in body.named_children if body is not None else ():
                method = _definition(member)
                if method is None or method.type != "function_definition":
                    continue
                m_row = member.start_point.row
                prev = member.prev_named_sibling
                while prev is not None and prev.type == "comment" and prev.end_point.row >= m_row - 1:
                    m_row, prev = prev.start_point.row, prev.prev_named_sibling
                starts.append((m_row, "method", f"{name}.{_text(method.child_by_field_name('name'))}"))
        elif definition is not None:
            starts.append((first, "function", _text(definition.child_by_field_name("name"))))
        elif name := _assigned_name(node):
            starts.append((first, "assignment", name))
        elif not starts or starts[-1][1] != "statements":
            starts.append((first, "statements", ""))
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, "statements", ""))
    clean = []
    for first, kind, name in starts:
        if first >= n_lines:
            continue
        if clean and first <= clean[-1][0]:  # two units cannot start on one line: keep the first
            continue
        clean.append((first, kind, name))
    return clean


def _lines(text: str) -> list[str]:
    """``text``'s lines split at ``\\n`` only (tree-sitter's rows), newlines kept."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def outline(text: str) -> Outline:
    """Imports and units of Python ``text`` (module docstring)."""
    if not text:
        return Outline((), ())
    root = _parser().parse(text.encode("utf-8")).root_node
    lines = _lines(text)
    starts = _starts(root, len(lines))
    units = []
    for i, (first, kind, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(lines)
        units.append(Unit(first, end, kind, name, "".join(lines[first:end])))
    return Outline(tuple(_imports(root)), tuple(units))
