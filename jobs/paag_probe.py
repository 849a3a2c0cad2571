"""Does the trained PAAG separate the simulator's hidden segments? A diagnostic for the regroup's groups.

    python jobs/paag_probe.py --model runs/paag/model.pt
    python jobs/paag_probe.py --warehouse W --model runs/paag_ablation/full-seed0/model.pt --every 3

For every --every-th product with at least --min-users viewers, K-Means (scikit-learn, the true number of
segments) on four representations of its viewers, scored by the adjusted Rand index against the hidden
segments (1 = the segments exactly, 0 = unrelated):
  eut       e_u|t, what the regroup clusters
  eu        e_u, the user embedding without the product
  delta     e_u|t - e_u, the product-aware part
  profile   the model's user-branch logit h_u(e_u|c) for each creative of the product, centred per user
            (what the model predicts this user prefers among the product's creatives)
Also the K that the mean silhouette picks (2..5) for each. Writes reports/paag_probe.json.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.paag import ProbeConfig, run_probe


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, ProbeConfig)
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(ProbeConfig, args)
    except ValueError as e:  # the config class's own checks
        return config_error("paag_probe", e)
    try:
        run_probe(cfg)
    except ConfigError as e:  # a missing table or model
        return config_error("paag_probe", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
