"""The whole nightly regroup at three world sizes, local mode and a two-worker standalone cluster.

    python jobs/bench_scale.py --model runs/paag/model.pt          # 60,000 / 200,000 / 600,000 users (make bench-scale)
    python jobs/bench_scale.py --users 60000 --modes local          # one world, one mode

Each world is the default world (its seed, products and parameters: Zipf product popularity) with another
number of users; the bench reuses the encoder features of --features-from and the PAAG trained there
(make paag-model). Per world and mode: rows/s, seconds per stage, the largest clustering call, peak memory
of the executor JVMs and PySpark workers; then the ratio of the largest world's rows/s to the smallest's.
Run it alone on the machine: memory is sampled from every Spark process. Writes reports/bench_scale.json.
The logic: osmf_core.evaluation.benchmarks.scale.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.benchmarks.scale import ScaleConfig, bench


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, ScaleConfig)
    try:
        bench(config_from_args(ScaleConfig, ap.parse_args(argv)))
    except ConfigError as e:
        return config_error("bench_scale", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
