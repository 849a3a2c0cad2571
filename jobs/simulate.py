"""Simulate the ad world and load the raw tables (users, products, creatives, impressions).

    python jobs/simulate.py --users 60000 --products 280          # local, embedded default
    spark-submit ... jobs/simulate.py --users 40000000 --products 2000000 --partitions 4000
"""
from __future__ import annotations

import argparse
import json
import sys

from osmf_core.data.config import add_spark_args
from osmf_core.world.simulate import add_world_args, run, world_config
from osmf_core.data.spark import run_job


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    ap.add_argument("--summary-json", help="also write the summary to this file")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("simulate", args, world_config, simulate)


def simulate(spark, cfg, warehouse: str) -> dict:
    summary = run(spark, cfg, warehouse).summary
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(main())
