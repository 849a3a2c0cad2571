"""Checks of a landing folder before Spark starts: each file can be read as the declared format and carries
the table's columns. A file that fails stops the load with one line naming the file and the problem
(LandingError, exit 2); single bad lines inside a good file are left to the loader, which rejects them as
`unparsable`. Also the load's id: a digest of the table and the files' bytes, so a rerun of one load
replaces its rejects instead of adding them again.

Local files are checked whole for emptiness and binary content and by their first SAMPLE_BYTES for the
format and the columns; files behind a URI (hdfs://, s3a://) are left to Spark.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from osmf_core.data.catalog import Table
from osmf_core.data.config import ConfigError

FORMATS = ("parquet", "json", "csv")
SAMPLE_BYTES = 1 << 20
_SKIP = ("_", ".")  # _SUCCESS, _delta_log, .crc files: not data


class LandingError(ConfigError):
    """An input file cannot be loaded at all."""


def data_files(path: str) -> list[Path]:
    """The data files of a file or folder (recursively), in name order."""
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file()
                   and not any(part.startswith(_SKIP) for part in f.relative_to(p).parts))
    if not files:
        raise LandingError(f"{path}: no data files in the folder")
    return files


def check_input(path: str, fmt: str, t: Table) -> list[Path]:
    """The local data files of `path`, each checked to parse as `fmt` and to carry `t`'s columns."""
    if fmt not in FORMATS:
        raise LandingError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if "://" in path:
        return []
    files = data_files(path)
    for f in files:
        check_file(f, fmt, t)
    return files


def check_file(f: Path, fmt: str, t: Table) -> None:
    size = f.stat().st_size
    if size == 0:
        raise LandingError(f"{f}: empty file")
    if fmt == "parquet":
        columns = _parquet_columns(f)
    else:
        with open(f, "rb") as fh:
            head = fh.read(SAMPLE_BYTES)
        text = _text(f, head, fmt, complete=size <= SAMPLE_BYTES)
        columns = _csv_columns(f, text) if fmt == "csv" else _json_columns(f, text)
    missing = [c for c in t.column_names if c not in columns]
    if missing:
        where = "its header" if fmt == "csv" else ("its schema" if fmt == "parquet" else
                                                     "any row of its first MiB")
        raise LandingError(f"{f}: not a {t.fqn} file: {', '.join(missing)} missing from {where}")


def _text(f: Path, head: bytes, fmt: str, complete: bool) -> str:
    if b"\x00" in head:
        raise LandingError(f"{f}: binary data, not {fmt.upper()} text")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if not complete and e.start >= len(head) - 4:  # a character cut by the sample's end
            return head[:e.start].decode("utf-8")
        raise LandingError(f"{f}: not UTF-8 text (byte {e.start}), not {fmt.upper()}") from None


def _json_columns(f: Path, text: str) -> set[str]:
    """Keys of the JSON objects among the sample's lines; no line an object: not JSON lines."""
    keys: set[str] = set()
    objects = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue  # one bad line: the loader rejects it as unparsable
        if isinstance(row, dict):
            objects += 1
            keys.update(row)
    if not objects:
        first = next((line for line in text.splitlines() if line.strip()), "")[:40]
        if not first:
            raise LandingError(f"{f}: no JSON lines (only blank lines)")
        raise LandingError(f"{f}: not JSON lines (no line is a JSON object; it starts {first!r})")
    return keys


def _csv_columns(f: Path, text: str) -> set[str]:
    header = next(csv.reader(io.StringIO(text)), [])
    if not any(h.strip() for h in header):
        raise LandingError(f"{f}: no CSV header line")
    return {h.strip() for h in header}


def _parquet_columns(f: Path) -> set[str]:
    import pyarrow.parquet as pq
    try:
        return set(pq.read_schema(f).names)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not Parquet
        raise LandingError(f"{f}: not a Parquet file ({str(e).splitlines()[0][:80]})") from None


def load_id(t: Table, path: str, files: list[Path]) -> str:
    """A digest of the table and the input files' bytes (of the path for a URI): equal for a rerun of one load."""
    h = hashlib.sha1(t.fqn.encode())
    if not files:
        h.update(path.encode())
    base = Path(path)
    for f in files:
        h.update(str(f.relative_to(base) if f != base else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
