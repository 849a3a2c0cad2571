"""Train PAAG with DeepSpeed on feat.paag_examples (read through petastorm), then report test AUROC.

    deepspeed --num_gpus 1 jobs/train_paag.py --deepspeed_config cluster/deepspeed/paag.json   # CPU, gloo
    deepspeed --num_gpus 8 jobs/train_paag.py --deepspeed_config cluster/deepspeed/paag_gpu.json
    python jobs/train_paag.py ...                                        # single process, no launcher
A killed run started again with the same --out-dir resumes from its last checkpoint.
"""
from __future__ import annotations

import sys

from osmf_core.training.loop import training_job
from osmf_core.training.paag import TrainConfig, require_features, train_and_test


def main(argv=None) -> int:
    return training_job("train_paag", __doc__, TrainConfig, train_and_test, argv, prepare=require_features)


if __name__ == "__main__":
    sys.exit(main())
