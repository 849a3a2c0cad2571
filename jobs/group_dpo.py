"""Group-DPO (eq. 9): LoRA fine-tuning of the G-MLLM on GRM-ranked prompts, several sample-rank-train rounds.

    deepspeed --num_gpus 1 jobs/group_dpo.py --deepspeed_config cluster/deepspeed/gmllm.json
    python jobs/group_dpo.py --rounds 3 --beta 0.2 --robust      # worst-group weighted loss
A killed run started again resumes (finished rounds are kept, the current one from its checkpoint).
The adapters end in <out-dir>/adapter, the per-round reward accuracy and margins in <out-dir>/dpo.json.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data import catalog as C
from osmf_core.data.config import config_error
from osmf_core.data.reader import run_of
from osmf_core.training.dpo import DPOConfig, run_group_dpo
from osmf_core.features.contexts import CONTEXT_TABLES

INTS = ("rounds", "samples", "max_new_tokens", "max_contexts", "epochs", "batch_size", "lora_r", "lora_alpha",
        "max_len", "seed", "save_every")
FLOATS = ("temperature", "min_margin", "beta", "lr", "robust_eta")
STRS = ("warehouse", "run_date", "gmllm", "grm", "deepspeed_config", "out_dir")


def main(argv=None) -> int:
    d = DPOConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for names, typ in ((INTS, int), (FLOATS, float), (STRS, str)):
        for name in names:
            flag = "--deepspeed_config" if name == "deepspeed_config" else f"--{name.replace('_', '-')}"
            ap.add_argument(flag, type=typ, default=getattr(d, name))
    ap.add_argument("--no-group", action="store_true", help="the policy reads no group token")
    ap.add_argument("--robust", action="store_true", help="worst-group (exponentiated-gradient) weighting")
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        cfg = DPOConfig(**{k: getattr(args, k) for k in (*INTS, *FLOATS, *STRS)}, use_group=not args.no_group,
                        robust=args.robust)
        cfg.run_date = run_of(C.INSTRUCTIONS, cfg.warehouse, cfg.run_date, needs=CONTEXT_TABLES)
    except ValueError as e:
        return config_error("group_dpo", e)
    out = run_group_dpo(cfg)
    print(f"Group-DPO: {len(out['rounds'])} rounds -> {out['adapter']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
