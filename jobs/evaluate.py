"""The paper's results across evaluation worlds and training seeds (make evaluate).

    python jobs/evaluate.py                                   # worlds 101, 102, 103; seeds 0, 1
    python jobs/evaluate.py --worlds 101 --seeds 0            # one world, one seed
    python jobs/evaluate.py --retrain                         # run the worlds again even where results exist

Per world: simulate, PAAG, regroup, Table 1, G-MLLMs, Figure 3, Table 3, with a progress line per stage;
writes reports/evaluate.json and docs/results.md. The development world (seed 7) is refused: every setting
was chosen there. The logic: osmf_core.evaluation.evaluate.
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import settings_job
from osmf_core.evaluation.evaluate import EvaluateConfig, run_evaluate


def main(argv=None) -> int:
    return settings_job("evaluate", __doc__, EvaluateConfig, run_evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
