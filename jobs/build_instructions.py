"""Build the G-MLLM instruction table (Table 5's four tasks) and the GRM pair table from one regroup run.

    python jobs/build_instructions.py                       # latest run date in gaip.groups
    python jobs/build_instructions.py --run-date 2026-11-07 --warehouse /shared/osmf/warehouse

Writes feat.instructions and feat.grm_examples; a rerun of a run date replaces its rows.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data.config import add_spark_args
from osmf_core.features.instructions import CurationConfig, run
from osmf_core.data.spark import run_job


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
    return run_job("build_instructions", args, lambda a: CurationConfig(
        run_date=a.run_date, window_days=a.window_days, context_clickers=a.context_clickers,
        behavior_examples=a.behavior_examples, product_examples=a.product_examples, test_share=a.test_share,
        seed=a.seed), run)


if __name__ == "__main__":
    sys.exit(main())
