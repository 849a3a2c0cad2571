"""The simulated online A/B test, a Table 3 analog, on the held-out products (those of the GRM's test split).

    python jobs/eval_online.py            # after make grm-models and the no-group G-MLLM (make eval-online does all)
    python jobs/eval_online.py --methods pretrained,one_size,osmf --seeds 0,1,2 --retrain
Methods, each giving one background prompt per (product, group) of a held-out product:
  pretrained     the pre-trained G-MLLM, greedy, with the group token
  teacher        what the G-MLLM was pre-trained to say: the style of the logged creative with the best
                 smoothed CTR in the group (the prompt-generation responses of feat.instructions)
  one_size       CTR-DPO, CAIG-like: no group token in the policy, ranked by the group-agnostic reward model;
                 one prompt per product, shown to every group
  osmf_no_group  Group-DPO ranked per group by the GRM, from a G-MLLM pre-trained without the group token (no
                 group information in the policy; one prompt per product)
  osmf           Group-DPO: policy and reference conditioned on G_{s,k}
  osmf_robust    osmf with worst-group (exponentiated-gradient) weighting of the DPO loss
  oracle         the best style per group by the simulator's truth: the ceiling
references that train nothing:
  pretrained_no_group  the pre-trained G-MLLM without the group token, one prompt per product: where the
                   group-agnostic methods start
and two ceilings by the simulator's truth, which split the oracle's lift into its parts:
  logged_best      per group, the best of the product's logged backgrounds (what re-ranking the log reaches)
  oracle_one_size  one style per product, the best over all its groups' users (no personalisation)
and, asked for by name, the diagnostic osmf_true_reward: Group-DPO ranked by the simulator's true CTR
instead of the GRM, which tells the reward model's share of a shortfall from Group-DPO's own.
Scored by the simulator's true expected CTR over each group's users; writes reports/eval_online.json.
With --seeds 0,1,2 every trained method is trained once per seed (Group-DPO's sampling and LoRA init):
the report gives the mean over seeds, its standard deviation and each seed's CTR.
The logic lives in osmf_core.evaluation.table3.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.table3 import PER_METHOD, OnlineEvalConfig, checked, run_table3
from osmf_core.training.dpo import DPOConfig


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, OnlineEvalConfig, skip=("dpo",))
    add_config_args(ap, DPOConfig, skip=PER_METHOD)  # Group-DPO's flags, shared by every trained method
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        cfg = checked(config_from_args(OnlineEvalConfig, args))
    except ValueError as e:  # ConfigError too: a bad flag, a missing model or table
        return config_error("eval_online", e)
    run_table3(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
