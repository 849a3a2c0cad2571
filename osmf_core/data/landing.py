"""Checks of a landing folder before Spark starts: each file can be read as the declared format and carries
the table's columns. A file that fails stops the load with one line naming the file and the problem
(LandingError, exit 2); single bad lines inside a good file are left to the loader, which rejects them as
`unparsable`. Also the load's id: a digest of the table and the files' bytes, so a rerun of one load
replaces its rejects instead of adding them again. `IngestConfig`, `prepare` and `load_batch` are the
ingest job's: its flags, its checks before Spark starts, its load.

Local files are checked whole for emptiness and binary content and by their first SAMPLE_BYTES for the
format and the columns; files behind a URI (hdfs://, s3a://) are left to Spark.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.errors import AnalysisException

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.ingest import CORRUPT, MODE_OF, DateWindow, ingest
from osmf_core.data.reader import require_tables
from osmf_core.data.schema import Table

FORMATS = ("parquet", "json", "csv")
SAMPLE_BYTES = 1 << 20
_SKIP = ("_", ".")  # _SUCCESS, _delta_log, .crc files: not data


NEEDS = {C.IMPRESSIONS.fqn: (C.USERS, C.CREATIVES), C.CREATIVES.fqn: (C.PRODUCTS,)}  # read by the rules


class LandingError(ConfigError):
    """An input file cannot be loaded at all."""


@dataclass
class IngestConfig:
    table: str = field(metadata={"choices": tuple(sorted(MODE_OF))})  # the raw table to load into
    input: str  # file or folder of log files
    format: str = field(default="parquet", metadata={"choices": FORMATS})  # how the files are written
    run_date: str = ""  # YYYY-MM-DD, the load's date (default: today)
    horizon_days: int = 90  # oldest event date accepted, in days before the run date
    future_days: int = 1  # latest event date accepted, in days after the run date

    def __post_init__(self):
        try:
            self.day = dt.date.fromisoformat(self.run_date) if self.run_date else dt.date.today()
        except ValueError:
            raise ValueError(f"--run-date must be a date YYYY-MM-DD, got {self.run_date!r}") from None
        self.window = DateWindow(self.day, self.horizon_days, self.future_days)
        self.load_id = ""


def prepare(cfg: IngestConfig, warehouse: str) -> IngestConfig:
    """Everything that needs no Spark: the input files (and the load's id), the warehouse, the tables the
    rules read. ConfigError (one line) on the first that fails."""
    if "://" not in cfg.input and not Path(cfg.input).exists():
        raise ConfigError(f"--input {cfg.input} does not exist")
    t = C.table(cfg.table)
    files = check_input(cfg.input, cfg.format, t)
    cfg.load_id = load_id(t, cfg.input, files)
    if "://" not in warehouse and not Path(warehouse).is_dir():
        raise ConfigError(f"--warehouse {warehouse} does not exist (make simulate, or create the folder for a "
                          "first load of users and products)")
    require_tables(NEEDS.get(cfg.table, ()), warehouse)
    return cfg


def read_input(spark, cfg: IngestConfig):
    """The input with every declared column as text (the loader types it); JSON lines that do not parse
    keep their text in CORRUPT."""
    t = C.table(cfg.table)
    if cfg.format == "json":
        schema = ", ".join(f"`{c}` string" for c in t.column_names) + f", `{CORRUPT}` string"
        reader = spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
        return reader.json(cfg.input)
    reader = spark.read.format(cfg.format)
    if cfg.format == "csv":
        reader = reader.option("header", "true")  # every column read as text; the loader types it
    return reader.load(cfg.input)


def load_batch(spark, cfg: IngestConfig, warehouse: str) -> dict:
    """Read, label and load one batch; prints its line (rows in = accepted + rejected) and returns its report."""
    try:
        frame = read_input(spark, cfg)
    except AnalysisException as e:  # no such path, or nothing readable there
        raise ConfigError(f"--input {cfg.input}: {str(e).splitlines()[0]}") from None
    try:
        report = ingest(frame, cfg.table, warehouse, cfg.day, cfg.window, cfg.load_id)
    except ValueError as e:  # a column missing from a file behind a URI (local files are checked before)
        raise ConfigError(f"--input {cfg.input}: {e}") from None
    print(report.line())
    return asdict(report)


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
