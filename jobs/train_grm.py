"""Train the group-aware reward model on feat.grm_examples, from the pre-trained G-MLLM.

    deepspeed --num_gpus 1 jobs/train_grm.py --deepspeed_config cluster/deepspeed/gmllm.json
    python jobs/train_grm.py --no-group                  # the group-agnostic (CAIG-like) reward model

Prints the Pair Accuracy on the held-out products' pairs.
"""
from __future__ import annotations

import sys

from osmf_core.training.grm import GRMConfig, resolve_run, train_and_score
from osmf_core.training.loop import training_job


def main(argv=None) -> int:
    return training_job("train_grm", __doc__, GRMConfig, train_and_score, argv, prepare=resolve_run)


if __name__ == "__main__":
    sys.exit(main())
