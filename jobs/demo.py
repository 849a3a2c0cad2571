"""Run the OSMF pipeline end to end on the embedded default: local Spark, local Delta warehouse,
the simulated ad world, small models. Stages: simulate (raw tables), encoder features and training rows,
a short PAAG training with DeepSpeed (single CPU process) and its held-out AUROC, the nightly regroup
(GAIP tables), the G-MLLM instruction rows, a short G-MLLM pre-training, a short GRM training, one round
of Group-DPO, and generation: one image per (product, group) into the gen tables and the HTML gallery.
Every model here is trained briefly; the make targets train them fully.

Writes reports/demo.json: each stage it ran and its wall time in seconds.
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import settings_job
from osmf_core.demo import DemoConfig, run_demo


def main(argv=None) -> int:
    return settings_job("demo", __doc__, DemoConfig, run_demo, argv)


if __name__ == "__main__":
    sys.exit(main())
