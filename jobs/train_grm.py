"""Train the group-aware reward model on feat.grm_examples, from the pre-trained G-MLLM.

    deepspeed --num_gpus 1 jobs/train_grm.py --deepspeed_config cluster/deepspeed/gmllm.json
    python jobs/train_grm.py --no-group                  # the group-agnostic (CAIG-like) reward model
Prints the Pair Accuracy on the held-out products' pairs.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data import catalog as C
from osmf_core.data.config import config_error
from osmf_core.models.gmllm.grm import GRM
from osmf_core.data.reader import run_of
from osmf_core.training.gmllm import MODEL_SUBDIR
from osmf_core.training.grm import GRMConfig, pair_metrics, score_pairs, train_grm


def add_grm_args(ap: argparse.ArgumentParser) -> None:
    d = GRMConfig()
    ap.add_argument("--warehouse", default=d.warehouse)
    ap.add_argument("--run-date", default=d.run_date, help="run of feat.grm_examples (default: the latest)")
    ap.add_argument("--gmllm", default=d.gmllm, help="pre-trained G-MLLM directory")
    ap.add_argument("--deepspeed_config", default=d.deepspeed_config)
    for name in ("epochs", "batch_size", "max_steps", "save_every", "max_len"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--head-lr", type=float, default=d.head_lr, help="reward head learning rate (0: --lr)")
    ap.add_argument("--pooling", default=d.pooling, choices=GRM.POOLINGS)
    ap.add_argument("--train-vision", action=argparse.BooleanOptionalAction, default=d.train_vision)
    ap.add_argument("--train-lm", action=argparse.BooleanOptionalAction, default=d.train_lm)
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")


def main(argv=None) -> int:
    d = GRMConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grm_args(ap)
    ap.add_argument("--no-group", action="store_true", help="no group token (group-agnostic reward model)")
    ap.add_argument("--points", type=int, default=d.n_points, help="percentile points read (-1: all)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--out-dir", default=d.out_dir)
    args = ap.parse_args(argv)
    try:
        cfg = GRMConfig(warehouse=args.warehouse, run_date=args.run_date, gmllm=args.gmllm, use_group=not args.no_group,
                        n_points=args.points, deepspeed_config=args.deepspeed_config, epochs=args.epochs,
                        batch_size=args.batch_size, max_steps=args.max_steps, save_every=args.save_every,
                        max_len=args.max_len, lr=args.lr, head_lr=args.head_lr, pooling=args.pooling,
                        train_vision=args.train_vision, train_lm=args.train_lm, seed=args.seed, out_dir=args.out_dir)
        cfg.run_date = run_of(C.GRM_EXAMPLES, cfg.warehouse, cfg.run_date)
    except ValueError as e:
        return config_error("train_grm", e)
    s = train_grm(cfg)
    import torch.distributed as dist
    if dist.get_rank() == 0:
        scores = score_pairs(GRM.load(f"{cfg.out_dir}/{MODEL_SUBDIR}"), cfg.warehouse, s["run_date"], max_len=cfg.max_len)
        m = pair_metrics(scores["p_ab"], scores["p_ba"], scores["label"], scores["product_id"] * 1000 + scores["group_id"])
        print(f"GRM{' (no group token)' if args.no_group else ''}: {s['step']} steps; held-out Pair Accuracy "
              f"{m['pair_accuracy']:.4f} on {m['pairs']:,} pairs, symmetry error {m['symmetry_error']:.4f} "
              f"-> {cfg.out_dir}/{MODEL_SUBDIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
