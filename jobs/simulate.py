"""Simulate the ad world and load the raw tables (users, products, creatives, impressions).

    python jobs/simulate.py --users 60000 --products 280          # local, embedded default
    spark-submit ... jobs/simulate.py --users 40000000 --products 2000000 --partitions 4000
"""
from __future__ import annotations

import json
import sys

from osmf_core.data.spark import spark_job
from osmf_core.world.simulate import SimulateConfig, simulate_world


def simulate(spark, cfg: SimulateConfig, warehouse: str) -> dict:
    summary = simulate_world(spark, cfg, warehouse).summary
    print(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    return spark_job("simulate", __doc__, SimulateConfig, simulate, argv)


if __name__ == "__main__":
    sys.exit(main())
