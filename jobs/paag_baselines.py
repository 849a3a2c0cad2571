"""What the PAAG data allows: reference AUROCs on the same held-out split as `make paag-ablation`.

    python jobs/paag_baselines.py                                 # make paag-baselines
    python jobs/paag_baselines.py --warehouse W --epochs 5 --report reports/paag_baselines_w.json

The oracle (the simulator's true click probabilities); smoothed click-rate lookups per creative, per
creative x propensity and per creative x true segment; logistic regression on PAAG's frozen image
features, full batch and minibatch as PAAG trains (--epochs); logistic regression on one-hot crosses
with the true segments, or with every attribute (by share of training users), and the true styles; and
each rung's reference, the true click logit restricted to the terms the rung can represent. Definitions:
osmf_core/evaluation/baselines.py. Writes reports/paag_baselines.json.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.baselines import BaselinesConfig, run_baselines


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, BaselinesConfig)
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(BaselinesConfig, args)
    except ValueError as e:  # the config class's own checks
        return config_error("paag_baselines", e)
    try:
        run_baselines(cfg)
    except ConfigError as e:  # a missing table
        return config_error("paag_baselines", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
