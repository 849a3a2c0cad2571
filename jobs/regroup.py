"""Nightly regroup: per-product silhouette-selected K-Means on e_u|t and the GAIP tables of one run date.

    python jobs/regroup.py --model runs/paag/model.pt                    # local, embedded default
    SPARK_MASTER=yarn cluster/submit.sh regroup --spark-config cluster/yarn.yaml \
        --model /shared/osmf/paag/model.pt --run-date 2026-11-07

The model path (and the warehouse) must be readable from every executor: a shared file system.

A rerun of a run date replaces that date's rows in gaip.groups, user_groups, group_ctr, pairs, metrics.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data.config import add_spark_args
from osmf_core.grouping.regroup import add_regroup_args, regroup_config, run
from osmf_core.data.spark import run_job


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_regroup_args(ap)
    ap.add_argument("--summary-json", help="also write the run's metrics to this file")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("regroup", args, regroup_config, run)


if __name__ == "__main__":
    sys.exit(main())
