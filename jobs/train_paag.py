"""Train PAAG with DeepSpeed on feat.paag_examples (read through petastorm), then report test AUROC.

    deepspeed --num_gpus 1 jobs/train_paag.py --deepspeed_config cluster/deepspeed/paag.json   # CPU, gloo
    deepspeed --num_gpus 8 jobs/train_paag.py --deepspeed_config cluster/deepspeed/paag_gpu.json
    python jobs/train_paag.py ...                                        # single process, no launcher
A killed run started again with the same --out-dir resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osmf_core.data.config import ConfigError, config_error
from osmf_core.models.paag import RUNGS
from osmf_core.data.reader import require_tables
from osmf_core.data.reader import FeatureBank
from osmf_core.training.paag import FEATURE_TABLES, MODEL_FILE, TrainConfig, add_model_args, auroc, model_config, predict, train
from osmf_core.models.paag import load_model


def main(argv=None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", default=d.warehouse)
    ap.add_argument("--rung", default="full", choices=RUNGS)
    ap.add_argument("--deepspeed_config", default=d.deepspeed_config)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--neg-rate", type=float, default=d.neg_rate,
                    help="share of non-clicked rows kept per epoch (negative downsampling)")
    ap.add_argument("--max-steps", type=int, default=d.max_steps)
    ap.add_argument("--save-every", type=int, default=d.save_every)
    ap.add_argument("--seed", type=int, default=d.seed)
    add_model_args(ap)
    ap.add_argument("--out-dir", default=d.out_dir)
    ap.add_argument("--text-encoder", default=d.text_encoder)
    ap.add_argument("--image-encoder", default=d.image_encoder)
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        require_tables(FEATURE_TABLES, args.warehouse)
    except ConfigError as e:
        return config_error("train_paag", e)
    cfg = TrainConfig(warehouse=args.warehouse, model=model_config(args, args.rung),
                      deepspeed_config=args.deepspeed_config, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, neg_rate=args.neg_rate, max_steps=args.max_steps, save_every=args.save_every,
                      seed=args.seed,
                      out_dir=args.out_dir, text_encoder=args.text_encoder, image_encoder=args.image_encoder)
    summary = train(cfg)
    import torch.distributed as dist
    if dist.get_rank() == 0:
        model, _ = load_model(Path(cfg.out_dir) / MODEL_FILE)
        bank = FeatureBank.load(cfg.warehouse, cfg.text_encoder, cfg.image_encoder)
        scores, labels, _ = predict(model, bank, cfg.warehouse, "test")
        summary["test_auroc"] = auroc(scores, labels)
        summary["test_rows"] = int(len(labels))
        Path(cfg.out_dir, "metrics.json").write_text(json.dumps(summary, indent=2))
        print(f"PAAG {cfg.model.rung}: {summary['step']} steps, test AUROC {summary['test_auroc']:.4f} "
              f"on {summary['test_rows']:,} held-out impressions -> {cfg.out_dir}/{MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
