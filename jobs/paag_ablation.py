"""The PAAG ablation ladder (paper Table 2) on the simulated world: test AUROC of each rung over seeds,
against the oracle AUROC of the simulator's true click probabilities.

    python jobs/paag_ablation.py                                  # make paag-ablation: five rungs, two seeds
    python jobs/paag_ablation.py --warehouse W --rungs I,full --seeds 1 --epochs 3 --out-dir runs/paag_ablation_5x

gap closed = (AUROC - 0.5) / (oracle AUROC - 0.5). Beside each rung, its reference: the AUROC of the
true click logit restricted to the terms that rung's structure can represent (`Truth.rung_logits`), and
the share of that reference's gap the rung closes. Each run trains in --out-dir/<rung>-seed<N> (a model
there trained with the same settings is reused); every PAAG training flag but --rung and --seed applies
to all runs. Writes reports/paag_ablation.json.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import config_from_args, job_parser
from osmf_core.evaluation.paag import AblationConfig, add_ablation_args, run_ablation


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_ablation_args(ap)
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(AblationConfig, args)
    except ValueError as e:  # the config classes' own checks
        return config_error("paag_ablation", e)
    try:
        run_ablation(cfg)
    except ConfigError as e:  # a missing table
        return config_error("paag_ablation", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
