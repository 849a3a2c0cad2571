"""Table 1 analog: how distinct and how true the regroup's groups are, against baseline groupings.

    python jobs/eval_groups.py --model runs/paag/model.pt                  # the latest complete regroup run
    python jobs/eval_groups.py --model runs/paag/model.pt --run-date 2026-11-07
    SPARK_MASTER=yarn cluster/submit.sh eval_groups --model /shared/osmf/paag/model.pt --run-date 2026-11-07

Groupings of the viewers of each product the regroup grouped: paag (the regroup's groups), paag_eut (the
same clustering on e_u|t), gender, age (three bands), gender_age, random (the PAAG groups' sizes) and
user_only (the same clustering on e_u, without the product). Scores: NDCG@5 between a product's groups on
observed and on expected CTR (lower = more distinct), and ARI against the simulator's hidden segments,
also per category (definitions: osmf_core/evaluation/groups.py).

Writes reports/eval_groups.json.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import add_spark_args
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.data.spark import run_job
from osmf_core.evaluation.groups import GroupsEvalConfig, evaluate_groups


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, GroupsEvalConfig)
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("eval_groups", args, lambda a: config_from_args(GroupsEvalConfig, a), evaluate_groups)


if __name__ == "__main__":
    sys.exit(main())
