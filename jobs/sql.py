"""Run one of the data engineers' queries (sql/queries/NAME.sql) against the warehouse and print it.

    python jobs/sql.py best_creative_per_group            # latest regroup run
    python jobs/sql.py ctr_spread_between_groups --run-date 2026-11-07 --top-n 50
    python jobs/sql.py --list
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data import queries
from osmf_core.data.config import ConfigError, add_spark_args, spark_settings
from osmf_core.data.spark import build_spark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query", nargs="?", help="query name (file name without .sql)")
    ap.add_argument("--list", action="store_true", help="list the queries with their first header line")
    ap.add_argument("--run-date", default=None, help="regroup run (default: the latest)")
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--rows", type=int, default=50, help="rows to print")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    if args.list or not args.query:
        for name in queries.names():
            print(f"{name:<32} {queries.text(name).splitlines()[0].split(':', 1)[-1].strip()}")
        return 0
    try:  # an unknown query, bad Spark flags or a parameter without a value: one line
        queries.text(args.query)  # before Spark starts
        settings = spark_settings(args)
        spark = build_spark(settings)
        df = queries.run(spark, args.query, settings.warehouse, args.run_date, args.top_n)
    except (KeyError, ConfigError) as e:
        print(f"sql: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    rows = df.limit(args.rows + 1).toPandas()
    print(rows.head(args.rows).to_string(index=False))
    if len(rows) > args.rows:
        print(f"... (more than {args.rows} rows; --rows N shows more)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
