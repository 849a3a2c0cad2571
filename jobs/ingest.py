"""Load a batch of raw log files into a raw table; broken rows go to gaip.rejects with their reason.

    python jobs/ingest.py --table raw.impressions --input landing/2026-11-07/ --format json \
        --run-date 2026-11-07

Impressions are appended by key (a Delta MERGE): rows already in the table are never rewritten or removed,
and a row whose impression id is already loaded is rejected as duplicate:impression_id, so re-loading a
file adds nothing. Users, products and creatives are upserted by key: changed rows are updated, rows
absent from the file stay. Event dates outside [run date - horizon, run date + future days] are rejected
as out_of_range:event_date. Rows in = rows accepted + rows rejected is checked and printed.

A file that is empty, cannot be read as --format or lacks a column of the table stops the load in one
line (exit 2) before Spark starts; a single unparsable line is rejected as `unparsable`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import asdict
from pathlib import Path

from pyspark.errors import AnalysisException

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError, add_spark_args, spark_settings
from osmf_core.data.landing import check_input, load_id
from osmf_core.data.ingest import CORRUPT, MODE_OF, DateWindow, ingest
from osmf_core.data.spark import run_job
from osmf_core.data.reader import require_tables

NEEDS = {C.IMPRESSIONS.fqn: (C.USERS, C.CREATIVES), C.CREATIVES.fqn: (C.PRODUCTS,)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, choices=sorted(MODE_OF))
    ap.add_argument("--input", required=True, help="file or folder of log files")
    ap.add_argument("--format", default="parquet", choices=["parquet", "json", "csv"])
    ap.add_argument("--run-date", type=dt.date.fromisoformat, default=dt.date.today())
    d = DateWindow(dt.date.today())
    ap.add_argument("--horizon-days", type=int, default=d.horizon_days,
                    help="oldest event date accepted, in days before the run date")
    ap.add_argument("--future-days", type=int, default=d.future_days,
                    help="latest event date accepted, in days after the run date")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("ingest", args, checked, load)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """Everything that needs no Spark: the input files, the warehouse, the tables the rules read."""
    if "://" not in args.input and not Path(args.input).exists():
        raise ConfigError(f"--input {args.input} does not exist")
    args.window = DateWindow(args.run_date, args.horizon_days, args.future_days)
    t = C.table(args.table)
    files = check_input(args.input, args.format, t)
    args.load_id = load_id(t, args.input, files)
    warehouse = spark_settings(args).warehouse
    if "://" not in warehouse and not Path(warehouse).is_dir():
        raise ConfigError(f"--warehouse {warehouse} does not exist (make simulate, or create the folder for a "
                          "first load of users and products)")
    require_tables(NEEDS.get(args.table, ()), warehouse)
    return args


def read_input(spark, args):
    """The input with every declared column as text (the loader types it); JSON lines that do not parse
    keep their text in CORRUPT."""
    t = C.table(args.table)
    if args.format == "json":
        schema = ", ".join(f"`{c}` string" for c in t.column_names) + f", `{CORRUPT}` string"
        reader = spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
        return reader.json(args.input)
    reader = spark.read.format(args.format)
    if args.format == "csv":
        reader = reader.option("header", "true")  # every column read as text; the loader types it
    return reader.load(args.input)


def load(spark, args, warehouse: str) -> dict:
    try:
        frame = read_input(spark, args)
    except AnalysisException as e:  # no such path, or nothing readable there
        raise ConfigError(f"--input {args.input}: {str(e).splitlines()[0]}") from None
    try:
        report = ingest(frame, args.table, warehouse, args.run_date, args.window, args.load_id)
    except ValueError as e:  # a column missing from a file behind a URI (local files are checked before)
        raise ConfigError(f"--input {args.input}: {e}") from None
    print(report.line())
    return asdict(report)


if __name__ == "__main__":
    sys.exit(main())
