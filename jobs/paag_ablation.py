"""The PAAG ablation ladder (paper Table 2) on the simulated world: test AUROC of each rung over seeds,
against the oracle AUROC of the simulator's true click probabilities.

gap closed = (AUROC - 0.5) / (oracle AUROC - 0.5). Beside each rung, its reference: the AUROC of the
true click logit restricted to the terms that rung's structure can represent (`Truth.rung_logits`), and
the share of that reference's gap the rung closes. Writes reports/paag_ablation.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from osmf_core.data.config import ConfigError, config_error, default_warehouse
from osmf_core.models.paag import RUNGS
from osmf_core.data.reports import write_report
from osmf_core.data.reader import require_tables
from osmf_core.data.reader import FeatureBank
from osmf_core.training.paag import FEATURE_TABLES, MODEL_FILE, TrainConfig, add_model_args, auroc, model_config, predict, train, training_settings
from osmf_core.models.paag import load_model
from osmf_core.world.truth import Truth


def _reusable(path: Path, cfg: TrainConfig):
    """The model at `path` if it has this configuration and training settings (then it is reused), else None.
    Models saved before the settings were stored are matched on the model configuration alone."""
    if not path.exists():
        return None
    model, blob = load_model(path)
    same = model.cfg.to_dict() == cfg.model.to_dict() and blob.get("training", training_settings(cfg)) == \
        training_settings(cfg)
    print(f"{path}: {'reused' if same else 'trained with other settings; training again'}")
    return model if same else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--warehouse", default=default_warehouse())
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per rung (for the spread)")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--neg-rate", type=float, default=TrainConfig.neg_rate,
                    help="share of non-clicked rows kept per epoch (negative downsampling)")
    ap.add_argument("--rungs", default=",".join(RUNGS), help="comma-separated rungs to train")
    add_model_args(ap)
    ap.add_argument("--out-dir", default="runs/paag_ablation")
    ap.add_argument("--report", default="reports/paag_ablation.json")
    args = ap.parse_args(argv)
    try:
        require_tables(FEATURE_TABLES, args.warehouse)
    except ConfigError as e:
        return config_error("paag_ablation", e)
    bank = FeatureBank.load(args.warehouse, TrainConfig.text_encoder, TrainConfig.image_encoder)
    rungs = [r for r in args.rungs.split(",") if r]
    unknown = set(rungs) - set(RUNGS)
    if unknown:
        ap.error(f"unknown rungs {sorted(unknown)}; choose from {RUNGS}")
    results: dict[str, list[float]] = {}
    oracle, reference = None, {}
    for rung in rungs:
        for seed in range(args.seeds):
            out = Path(args.out_dir) / f"{rung}-seed{seed}"
            cfg = TrainConfig(warehouse=args.warehouse, model=model_config(args, rung), epochs=args.epochs,
                              max_steps=args.max_steps, lr=args.lr, neg_rate=args.neg_rate, seed=seed, out_dir=str(out),
                              save_every=10 ** 9)
            t0 = time.perf_counter()
            model = _reusable(out / MODEL_FILE, cfg)
            if model is None:
                train(cfg)
                model, _ = load_model(out / MODEL_FILE)
            scores, labels, rows = predict(model, bank, args.warehouse, "test")
            results.setdefault(rung, []).append(auroc(scores, labels))
            print(f"{rung:<10} seed {seed}: AUROC {results[rung][-1]:.4f} ({time.perf_counter() - t0:.0f}s)")
            if oracle is None:
                truth = Truth.from_warehouse(args.warehouse)
                oracle = auroc(truth.click_probability(rows, rows["creative_id"]), labels)
                reference = {r: auroc(v, labels) for r, v in truth.rung_logits(rows, rows["creative_id"]).items()}
    mean = {r: float(np.mean(v)) for r, v in results.items()}
    std = {r: float(np.std(v)) for r, v in results.items()}
    gap = (mean["full"] - 0.5) / (oracle - 0.5) if "full" in mean else None
    print(f"\n{'rung':<10} {'AUROC':>8} {'± std':>8} {'gap closed':>11} {'reference':>10} {'of its gap':>11}")
    for r in rungs:
        print(f"{r:<10} {mean[r]:>8.4f} {std[r]:>8.4f} {(mean[r] - 0.5) / (oracle - 0.5):>10.1%} "
              f"{reference[r]:>10.4f} {(mean[r] - 0.5) / (reference[r] - 0.5):>10.1%}")
    print(f"{'oracle':<10} {oracle:>8.4f}")
    write_report(args.report, {"auroc": mean, "auroc_std": std, "oracle_auroc": oracle, "gap_closed": gap,
                               "reference_auroc": {r: reference[r] for r in rungs},
                               "seeds": args.seeds, "epochs": args.epochs,
                               "neg_rate": args.neg_rate})
    return 0


if __name__ == "__main__":
    sys.exit(main())
