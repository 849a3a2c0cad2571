"""Benchmark of the regroup's clustering core against a per-product scikit-learn loop and Spark MLlib.

    python jobs/bench_regroup.py                        # the world mix (make bench-regroup, after make regroup)
    python jobs/bench_regroup.py --mix gaussian --report reports/bench_regroup_gaussian.json
    python jobs/bench_regroup.py --restarts 4 --scaling 1000,10000,100000

Data: a power-law mix of product sizes (10 to 100,000 users), --mix world (default: random products of the
warehouse seen by sampled users of the simulated world, embedded by the trained PAAG into the space the
regroup clusters) or gaussian (a stress test: 2-5 weakly separated Gaussian groups per product in d = 128).
Every method (osmf's batched cluster_products, a per-product scikit-learn loop, MLlib on a subset) gets the
same K range, the same restarts and one core. Also: K* agreement beside its noise floor, a scaling curve
(each mix in a fresh process), the sampled silhouette's error, the whole job's rows/s from gaip.metrics.
Writes reports/bench_regroup.json. The logic and its details: osmf_core.evaluation.benchmarks.regroup.
"""
from __future__ import annotations

import argparse
import json
import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.benchmarks.regroup import BenchConfig, bench, scale_point


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, BenchConfig)
    ap.add_argument("--scale-point", type=int, help=argparse.SUPPRESS)  # internal: one scaling run, its rows
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(BenchConfig, args)
        if args.scale_point:  # a fresh process of bench's scaling curve: one JSON line
            print(json.dumps(scale_point(cfg, args.scale_point)))
        else:
            bench(cfg, script=__file__)
    except ConfigError as e:
        return config_error("bench_regroup", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
