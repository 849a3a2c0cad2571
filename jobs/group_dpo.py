"""Group-DPO (eq. 9): LoRA fine-tuning of the G-MLLM on GRM-ranked prompts, several sample-rank-train rounds.

    deepspeed --num_gpus 1 jobs/group_dpo.py --deepspeed_config cluster/deepspeed/gmllm.json
    python jobs/group_dpo.py --rounds 3 --beta 0.2 --robust      # worst-group weighted loss
A killed run started again resumes (finished rounds are kept, the current one from its checkpoint).
The adapters end in <out-dir>/adapter, the per-round reward accuracy and margins in <out-dir>/dpo.json.
"""
from __future__ import annotations

import sys

from osmf_core.training.dpo import DPOConfig, resolve_run, train_and_report
from osmf_core.training.loop import training_job


def main(argv=None) -> int:
    return training_job("group_dpo", __doc__, DPOConfig, train_and_report, argv, prepare=resolve_run)


if __name__ == "__main__":
    sys.exit(main())
