"""Throughput of G-MLLM pre-training and GRM training through the jobs' own engine and training step:
tokens per second, peak memory and model FLOPs utilisation (MFU), per engine variant and batch size, side by
side with a baseline variant (the first listed).

Two steps, so that a GPU node needs neither Spark nor the warehouse:
    python jobs/bench_gmllm.py export --out runs/bench_gmllm/rows     # sample rows of feat.instructions and
                                                                      # feat.grm_examples (petastorm) to Parquet
    python jobs/bench_gmllm.py run --rows runs/bench_gmllm/rows --shape smollm2-1.7b --batch-sizes 16,32
    python jobs/bench_gmllm.py one --phase pretrain --variant jobs --profile FILE   # one run, as JSON
`make bench-gmllm` does both on this machine with the tiny profile. `export` runs jobs/bench_gmllm_export.py
in a process of its own, so this file imports no Spark, Delta or petastorm (a GPU node has none).

Models (--shape): `tiny`, or the small profile's architecture at one of SmolLM2's shapes with random
weights, read with SmolLM2's tokenizer from --tokenizer. Variants (--variants): jobs (the training jobs'
engine on this machine: on one GPU no ZeRO, bf16 autocast, fused AdamW, compiled), eager (not compiled),
zero2 (the JSON's ZeRO-2 and DeepSpeed's bf16 optimizer). The engine flags (--precision, --compile,
--checkpointing, --zero-stage) are the jobs'. Timed: --steps training steps after --warmup, on batches encoded
before the clock starts; each run in a fresh process. MFU: counted FLOPs per step / step time / the device's
dense peak (--peak-tflops overrides; none on a CPU). Details: osmf_core.evaluation.benchmarks.gmllm. Writes
reports/bench_gmllm.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.benchmarks.gmllm import (BenchConfig, ExportConfig, OneConfig, StepFailed, add_args, bench,
                                                    flags_of, run_one)


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_config_args(sub.add_parser("export", help="sample rows from the warehouse to Parquet (needs the Spark stack)"),
                    ExportConfig)
    add_args(sub.add_parser("run", help="the benchmark"), BenchConfig)
    add_args(sub.add_parser("one", help="one (phase, batch size, variant), as JSON"), OneConfig)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "export":  # the data side, in its own process: see the docstring
            export_job = str(Path(__file__).with_name("bench_gmllm_export.py"))
            return subprocess.run([sys.executable, export_job, *flags_of(config_from_args(ExportConfig, args))]).returncode
        if args.cmd == "one":
            print("RESULT " + json.dumps(run_one(config_from_args(OneConfig, args))))
        else:
            bench(config_from_args(BenchConfig, args), script=__file__)
    except ConfigError as e:  # a missing sample or tokenizer: one line, as every job
        return config_error("bench_gmllm", e)
    except StepFailed as e:
        print(f"bench_gmllm: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
