"""Pre-train the G-MLLM (LLaVA + group token) on feat.instructions with DeepSpeed, fed by petastorm.

    deepspeed --num_gpus 1 jobs/pretrain_gmllm.py --deepspeed_config cluster/deepspeed/gmllm.json   # CPU, tiny
    deepspeed --num_gpus 8 jobs/pretrain_gmllm.py --deepspeed_config cluster/deepspeed/zero2_8gpu.json \\
        --base /models/llava-1.5-7b-hf
    deepspeed --num_gpus 1 jobs/pretrain_gmllm.py --base smollm2 --batch-size 8   # small real profile
A killed run started again with the same --out-dir resumes from its last checkpoint.
"""
from __future__ import annotations

import sys

from osmf_core.training.gmllm import PretrainConfig, pretrain_and_report, resolve_run
from osmf_core.training.loop import training_job


def main(argv=None) -> int:
    return training_job("pretrain_gmllm", __doc__, PretrainConfig, pretrain_and_report, argv, prepare=resolve_run)


if __name__ == "__main__":
    sys.exit(main())
