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

from osmf_core.data.config import ConfigError, add_spark_args, config_error, spark_settings
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.demo import DemoConfig, run_demo


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, DemoConfig)
    add_spark_args(ap)
    args = ap.parse_args(argv)
    try:
        cfg, settings = config_from_args(DemoConfig, args), spark_settings(args)
    except (ValueError, ConfigError) as e:
        return config_error("demo", e)
    run_demo(cfg, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
