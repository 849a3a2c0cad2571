"""The Figure 3 analog: Pair Accuracy of the group-aware reward model against a group-agnostic one and
against the number of percentile points in the group token, over seeds, on held-out products.

    python jobs/eval_grm.py                 # after make pretrain-gmllm; writes reports/eval_grm.json
    python jobs/eval_grm.py --variants grm,no_group --seeds 3 --no-reference --out-dir runs/eval_grm_base
    python jobs/eval_grm.py --probe-only    # only the vision probe: what the G-MLLM's image features show
Each variant is trained from the same pre-trained G-MLLM (runs/eval_grm/<variant>/seed<k>) and scored on
the test pairs twice: against the pairs' observed labels (the group CTRs of the log, as the paper scores)
and against the simulator's true labels (expected CTR of each creative over the group's users).

The "style_codes" rows are a reference ceiling, not a model variant: a logistic regression that reads
what only the simulator knows -- the style codes (scene, palette, lighting, mood) of both creatives
(Truth.creative_style) -- crossed with the product's category and the group's features (style_codes) or
with the category alone (style_codes_no_group), trained on the train pairs and scored on the test pairs.
The "true_order" rows predict with the simulator's expected CTRs: within the pair's group
(true_order_group: on the observed labels, how often the log's CTR order is right) and over all the
product's viewers (true_order_product: the best any reward model without the group can do; on true labels,
1 minus it is the most the group token can add). The logic lives in osmf_core.evaluation.figure3.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.figure3 import PER_VARIANT, GRMEvalConfig, checked, run_figure3
from osmf_core.training.grm import GRMConfig


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, GRMEvalConfig, skip=("train",))
    add_config_args(ap, GRMConfig, skip=PER_VARIANT)  # the reward models' training flags, shared by every variant
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        cfg = checked(config_from_args(GRMEvalConfig, args))
    except ValueError as e:  # ConfigError too: a bad flag, a missing model or table
        return config_error("eval_grm", e)
    run_figure3(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
