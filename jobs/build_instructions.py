"""Build the G-MLLM instruction table (Table 5's four tasks) and the GRM pair table from one regroup run.

    python jobs/build_instructions.py                       # latest run date in gaip.groups
    python jobs/build_instructions.py --run-date 2026-11-07 --warehouse /shared/osmf/warehouse

Writes feat.instructions and feat.grm_examples; a rerun of a run date replaces its rows.
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import spark_job
from osmf_core.features.instructions import CurationConfig, build_instructions


def main(argv=None) -> int:
    return spark_job("build_instructions", __doc__, CurationConfig, build_instructions, argv)


if __name__ == "__main__":
    sys.exit(main())
