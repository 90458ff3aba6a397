"""An independent judge for member accesses: mypy's ``attr-defined`` errors.

The monitor builds its mask from jedi (through jedi-language-server); judging its effect with
jedi could not disagree with it. This judge is a type checker from PyPI instead: the file with
the completion in it is checked by mypy in its own repository (``--shadow-file``: mypy reads our
text in place of the file on disk, so nothing in the repository is written), and every
``has no attribute`` error (``[attr-defined]``) on the completion's lines is an invalid member.

    errors = member_errors("/repo/pkg/mod.py", text_with_completion, lines={42})

What it is not: a full type check of the repository (``--follow-imports=silent``: imported
modules are read for their types but not reported), and not a verdict on code mypy cannot type
(an ``Any`` receiver has every attribute: such accesses are not counted either way).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_ERROR = re.compile(r"^(?P<file>.+?):(?P<line>\d+): error: (?P<msg>.*?)\s+\[(?P<code>[a-z-]+)\]$")
_ATTR = re.compile(r'has no attribute "(?P<name>[^"]+)"')


class Unparsable(ValueError):
    """The text does not parse: mypy judges nothing in it (the completion broke the syntax)."""


@dataclass(frozen=True)
class MemberError:
    line: int  # 1-based, in the checked text
    name: str  # the attribute that does not exist
    message: str


def mypy_command() -> list[str]:
    """mypy from this interpreter's environment (a dev dependency)."""
    return [sys.executable, "-m", "mypy"]


def member_errors(path: str | Path, text: str, *, lines: Iterable[int] | None = None,
                  root: str | Path | None = None, cache_dir: str | Path | None = None,
                  timeout_s: float = 300.0) -> list[MemberError]:
    """``attr-defined`` errors mypy finds in ``text`` checked as the file ``path``.

    ``lines``: only errors on these 1-based lines (the completion's). ``root``: the working
    directory for mypy (default: the file's directory); ``cache_dir``: mypy's incremental cache
    (reuse it across calls on one repository: the first check of a package takes seconds, the
    next ones a fraction). Raises ``Unparsable`` for a text with a syntax error (nothing can be
    judged) and ``RuntimeError`` when mypy itself fails (not when it reports).
    """
    path = Path(path).resolve()
    if not path.exists():
        raise ValueError(f"{path} does not exist: mypy checks a file in its repository")
    wanted = None if lines is None else set(lines)
    with tempfile.TemporaryDirectory(prefix="codedec-judge-") as tmp:
        shadow = Path(tmp) / "shadow" / path.name
        shadow.parent.mkdir()
        shadow.write_text(text, encoding="utf-8")
        checked, cwd = _mirrored(path, Path(tmp)), str(root or path.parent)
        if checked != path:
            cwd = str(Path(tmp) / "mirror")
        cmd = [*mypy_command(), "--shadow-file", str(checked), str(shadow), "--follow-imports=silent",
               "--ignore-missing-imports", "--no-error-summary", "--show-error-codes", "--no-pretty",
               "--show-absolute-path", "--cache-dir", str(cache_dir or Path(tmp) / "cache"), str(checked)]
        env = {**os.environ, "MYPY_FORCE_COLOR": "0"}
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode == 2 and "[syntax]" in proc.stdout:
        raise Unparsable(proc.stdout.strip().splitlines()[0])
    if proc.returncode not in (0, 1):  # 2: mypy could not run (bad options, a crash)
        raise RuntimeError(f"mypy failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    found = []
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line.strip())
        if not m or m["code"] != "attr-defined" or Path(m["file"]) not in (checked, path):
            continue
        n = int(m["line"])
        attr = _ATTR.search(m["msg"])
        if attr and (wanted is None or n in wanted):
            found.append(MemberError(n, attr["name"], m["msg"]))
    return found


def _mirrored(path: Path, tmp: Path) -> Path:
    """The path to check. A file of an installed package (under ``site-packages``) is checked
    through a symlink to its top package in a scratch directory: checked in place, mypy would
    take the whole ``site-packages`` as the source root and stop at the modules there that
    shadow its own (``mypy_extensions``)."""
    if not any(part in ("site-packages", "dist-packages") for part in path.parts):
        return path
    top = path.parent
    while (top.parent / "__init__.py").exists():
        top = top.parent
    if not (top / "__init__.py").exists():
        return path  # a top-level module, not a package: check in place
    mirror = tmp / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / top.name).symlink_to(top, target_is_directory=True)
    return mirror / top.name / path.relative_to(top)


def available() -> bool:
    """Is mypy installed in this environment?"""
    return importlib.util.find_spec("mypy") is not None
