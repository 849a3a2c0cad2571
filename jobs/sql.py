"""Run one of the data engineers' queries (sql/queries/NAME.sql) against the warehouse and print it.

    python jobs/sql.py best_creative_per_group            # latest regroup run
    python jobs/sql.py ctr_spread_between_groups --run-date 2026-11-07 --top-n 50
    python jobs/sql.py --list
"""
from __future__ import annotations

import sys

from osmf_core.data import queries
from osmf_core.data.config import ConfigError, add_spark_args, spark_settings
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.data.spark import build_spark


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    ap.add_argument("name", nargs="?", help="query name (file name without .sql)")
    ap.add_argument("--list", action="store_true", help="list the queries with their first header line")
    add_config_args(ap, queries.QueryConfig, skip=("query",))
    add_spark_args(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(queries.QueryConfig, args, query=args.name or "")
    if args.list or not cfg.query:
        for name in queries.names():
            print(f"{name:<32} {queries.text(name).splitlines()[0].split(':', 1)[-1].strip()}")
        return 0
    try:  # an unknown query, bad Spark flags or a parameter without a value: one line
        queries.text(cfg.query)  # before Spark starts
        settings = spark_settings(args)
        spark = build_spark(settings)
        df = queries.run_query(spark, cfg.query, settings.warehouse, cfg.run_date or None, cfg.top_n)
    except (KeyError, ConfigError) as e:
        print(f"sql: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    rows = df.limit(cfg.rows + 1).toPandas()
    print(rows.head(cfg.rows).to_string(index=False))
    if len(rows) > cfg.rows:
        print(f"... (more than {cfg.rows} rows; --rows N shows more)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
