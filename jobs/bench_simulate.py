"""Benchmark the simulator: rows generated and loaded per second at two world sizes, 10x apart.

    python jobs/bench_simulate.py                       # 4,000 and 40,000 users (make bench-simulate)
    python jobs/bench_simulate.py --users 2000 --impressions-per-user 20

Both sizes run in one Spark session, after a warm-up, into a scratch warehouse; the rows counted are
all rows loaded (users + products + creatives + impressions). Prints the ratio of the two throughputs
(near 1 or above = the simulator scales linearly) and writes reports/bench_simulate.json.
The logic: osmf_core.evaluation.benchmarks.simulate.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.benchmarks.simulate import BenchConfig, bench


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, BenchConfig)
    try:
        bench(config_from_args(BenchConfig, ap.parse_args(argv)))
    except ConfigError as e:
        return config_error("bench_simulate", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
