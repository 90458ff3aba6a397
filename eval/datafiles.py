"""Reading benchmark data files: JSONL (optionally gzipped) and Parquet, with located errors.

Each reader yields ``(location, row)`` pairs where ``location`` is the 1-based line number
(JSONL) or row number (Parquet), so a loader that finds a bad row can raise a
:class:`DataError` naming the file and the line. Nothing here knows a benchmark's schema
beyond :func:`require`, which checks keys and types.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file that cannot be used: unreadable, not JSON, or missing/mistyped fields.

    ``str(err)`` is ``"<path>:<line>: <what is wrong>"`` (``line`` is None when the
    problem is the whole file).
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz``.

    Raises DataError on a missing file, bad gzip/UTF-8, invalid JSON or a non-object line.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(path, number, f"expected a JSON object, got {type(obj).__name__}")
                yield number, obj
    except FileNotFoundError:
        raise DataError(path, None, "no such file") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(path, None, f"cannot read: {exc}") from None


def read_parquet(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` (1-based) for each row of a Parquet file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family
        raise DataError(path, None, f"cannot read Parquet: {exc}") from None
    yield from enumerate(table.to_pylist(), start=1)


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Dispatch on the file name: ``.parquet`` → Parquet, ``.jsonl``/``.json``/``.gz`` → JSONL."""
    name = str(path).lower()
    if name.endswith(".parquet"):
        return read_parquet(path)
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return read_jsonl(path)
    raise ValueError(f"unknown data file type {str(path)!r}: expected .jsonl, .jsonl.gz or .parquet")


def require(row: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], path: str | Path,
            line: int) -> None:
    """Raise DataError unless ``row`` has every key of ``fields`` with a value of that type."""
    missing = [k for k in fields if k not in row]
    if missing:
        raise DataError(path, line, f"missing field(s) {', '.join(missing)}")
    for key, kind in fields.items():
        if not isinstance(row[key], kind):
            names = "/".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise DataError(path, line, f"field {key!r} should be {names}, got {type(row[key]).__name__}")
