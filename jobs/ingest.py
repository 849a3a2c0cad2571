"""Load a batch of raw log files into a raw table; broken rows go to gaip.rejects with their reason.

    python jobs/ingest.py --table raw.impressions --input landing/2026-11-07/ --format json \
        --run-date 2026-11-07
Rows in = rows accepted + rows rejected is checked and printed; a rerun of the same run date replaces.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import asdict
from pathlib import Path

from pyspark.errors import AnalysisException

from osmf_core.config import ConfigError, add_spark_args
from osmf_core.quality import ingest
from osmf_core.spark import run_job


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, choices=["raw.users", "raw.products", "raw.creatives",
                                                       "raw.impressions"])
    ap.add_argument("--input", required=True, help="file or folder of log files")
    ap.add_argument("--format", default="parquet", choices=["parquet", "json", "csv"])
    ap.add_argument("--run-date", type=dt.date.fromisoformat, default=dt.date.today())
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("ingest", args, checked, load)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    if "://" not in args.input and not Path(args.input).exists():
        raise ConfigError(f"--input {args.input} does not exist")
    return args


def load(spark, args, warehouse: str) -> dict:
    reader = spark.read.format(args.format)
    if args.format == "csv":
        reader = reader.option("header", "true")  # every column read as text; the loader types it
    try:
        frame = reader.load(args.input)
    except AnalysisException as e:  # no such path, or nothing readable there
        raise ConfigError(f"--input {args.input}: {str(e).splitlines()[0]}") from None
    report = ingest(frame, args.table, warehouse, args.run_date)
    print(report.line())
    return asdict(report)


if __name__ == "__main__":
    sys.exit(main())
