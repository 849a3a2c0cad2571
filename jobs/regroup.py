"""Nightly regroup: per-product silhouette-selected K-Means on e_u|t and the GAIP tables of one run date.

    python jobs/regroup.py --model runs/paag/model.pt                    # local, embedded default
    SPARK_MASTER=yarn cluster/submit.sh regroup --spark-config cluster/yarn.yaml \\
        --model /shared/osmf/paag/model.pt --run-date 2026-11-07

The model path (and the warehouse) must be readable from every executor: a shared file system.

A rerun of a run date replaces that date's rows in gaip.groups, user_groups, group_ctr, pairs, metrics.
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import spark_job
from osmf_core.grouping.regroup import SPARK_CONF, RegroupConfig, check_model, regroup


def main(argv=None) -> int:
    return spark_job("regroup", __doc__, RegroupConfig, regroup, argv, prepare=lambda cfg, warehouse: check_model(cfg),
                     conf=SPARK_CONF)


if __name__ == "__main__":
    sys.exit(main())
