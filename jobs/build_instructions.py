"""Build the G-MLLM instruction table (Table 5's four tasks) and the GRM pair table from one regroup run.

    python jobs/build_instructions.py                       # latest run date in gaip.groups
    python jobs/build_instructions.py --run-date 2026-11-07 --warehouse /shared/osmf/warehouse

Writes feat.instructions and feat.grm_examples; a rerun of a run date replaces its rows.
"""
from __future__ import annotations

import argparse
import json
import sys

from osmf_core.config import ConfigError, add_spark_args, spark_settings
from osmf_core.curation import CurationConfig, run
from osmf_core.spark import build_spark


def main(argv=None) -> int:
    d = CurationConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-date", default=d.run_date, help="regroup run to read (default: the latest)")
    for name in ("window_days", "context_clickers", "behavior_examples", "product_examples", "seed"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    ap.add_argument("--test-share", type=float, default=d.test_share,
                    help="share of products whose pairs are held out for GRM evaluation")
    ap.add_argument("--summary-json", help="also write the row counts to this file")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    try:  # a configuration that cannot work stops here, in one line, before any table is touched
        cfg = CurationConfig(run_date=args.run_date, window_days=args.window_days,
                             context_clickers=args.context_clickers, behavior_examples=args.behavior_examples,
                             product_examples=args.product_examples, test_share=args.test_share, seed=args.seed)
        settings = spark_settings(args)
        spark = build_spark(settings)
        summary = run(spark, cfg, settings.warehouse)
    except ConfigError as e:
        print(f"build_instructions: {e}", file=sys.stderr)
        return 2
    if args.summary_json:
        with open(args.summary_json, "w") as fh:
            json.dump(summary, fh, indent=2)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
