"""The data side of the G-MLLM benchmark: a seeded sample of feat.instructions and feat.grm_examples
(read with petastorm) written to two Parquet files, which `jobs/bench_gmllm.py run` times on any node.

    python jobs/bench_gmllm_export.py --out runs/bench_gmllm/rows
    python jobs/bench_gmllm.py export --out runs/bench_gmllm/rows     # the same, through the benchmark's job

Needs the data stack (Delta, petastorm). The logic: osmf_core.evaluation.benchmarks.gmllm_export.
"""
from __future__ import annotations

import json
import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.benchmarks.gmllm import ExportConfig
from osmf_core.evaluation.benchmarks.gmllm_export import export


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, ExportConfig)
    try:
        print(json.dumps(export(config_from_args(ExportConfig, ap.parse_args(argv)))))
    except ConfigError as e:  # a table or run missing: one line, as every job (the benchmark's name)
        return config_error("bench_gmllm", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
