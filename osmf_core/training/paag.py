"""Train PAAG with DeepSpeed, fed by petastorm, and score it on the held-out days (AUROC).

One process with gloo on CPU by default; under the DeepSpeed launcher on a GPU node, one process per
GPU (each reads its own shard of the table's files). Checkpoints every `save_every` steps hold the
engine, the optimizer, the data position and the RNG state, so a killed run resumes where it left off.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from osmf_core.data import catalog as C
from osmf_core.data.config import default_warehouse
from osmf_core.data.reader import ATTRS, FeatureBank, example_batches, read_columns, require_tables
from osmf_core.models.paag import PAAG, PAAGConfig, load_model
from osmf_core.training.loop import ds_config, fit, init_distributed

MODEL_FILE = "model.pt"
FEATURE_TABLES = (C.TITLE_TOKENS, C.IMAGE_PATCHES, C.PAAG_EXAMPLES)  # what training and prediction read


@dataclass
class TrainConfig:
    # data
    # Delta warehouse with feat.* tables; default $OSMF_WAREHOUSE, else ./warehouse (as the Spark jobs)
    warehouse: str = field(default_factory=default_warehouse)
    text_encoder: str = "minilm"  # which rows of feat.title_tokens to use
    image_encoder: str = "mobilenet_v2"  # which rows of feat.image_patches to use
    # model
    model: PAAGConfig = field(default_factory=PAAGConfig)
    # optimisation (batch size and learning rate override the DeepSpeed JSON)
    deepspeed_config: str = "cluster/deepspeed/paag.json"  # DeepSpeed JSON: optimizer, precision, ZeRO
    epochs: int = 3
    batch_size: int = 512  # per process
    lr: float = 2e-3
    neg_rate: float = 0.1  # share of non-clicked rows kept per epoch (negative downsampling); 1 = all
    max_steps: int = 0  # stop after this many steps (0 = run all epochs)
    shuffle_buffer: int = 65_536  # rows shuffled together
    seed: int = 0
    # output
    out_dir: str = "runs/paag"  # checkpoints/ and the final model.pt
    save_every: int = 500  # checkpoint every N steps
    progress: bool = True  # tqdm bar with the loss

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.save_every < 1:
            raise ValueError("epochs, batch_size and save_every must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if not 0 < self.neg_rate <= 1:
            raise ValueError("neg_rate must be in (0, 1]")


def _tensors(batch: dict, bank: FeatureBank, device) -> tuple:
    attrs = torch.from_numpy(np.stack([batch[a] for a in ATTRS], axis=1).astype(np.int64))
    title, tmask = bank.titles(batch["product_id"])
    patches, pmask = bank.images(batch["creative_id"])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return (attrs.to(device), t(title), t(tmask), t(patches), t(pmask)), t(batch["clicked"].astype(np.float32))


def _ds_config(cfg: TrainConfig) -> dict:
    return ds_config(cfg.deepspeed_config, cfg.batch_size, cfg.lr)


def train(cfg: TrainConfig, stop_after: int | None = None) -> dict:
    """Train (or resume) PAAG. `stop_after` ends the process's work abruptly after that many steps,
    without a checkpoint, as a kill would (used to test resumption). Returns a summary."""
    import deepspeed
    rank, world = init_distributed()
    bank = FeatureBank.load(cfg.warehouse, cfg.text_encoder, cfg.image_encoder)
    mcfg = PAAGConfig(**{**asdict(cfg.model), "text_dim": bank.text_dim, "image_dim": bank.image_dim})
    torch.manual_seed(cfg.seed)
    model = PAAG(mcfg)
    model.set_feature_stats(bank.title, bank.title_mask, bank.patches, bank.patch_mask,
                            base_rate=click_rate(cfg.warehouse))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=_ds_config(cfg))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    offset = float(np.log(cfg.neg_rate))  # odds of a click among the kept rows are 1/neg_rate times higher

    def batches(epoch: int):
        return example_batches(cfg.warehouse, "train", cfg.batch_size, seed=cfg.seed * 1000 + epoch, shard=rank,
                               shards=world, buffer_rows=cfg.shuffle_buffer, drop_last=True, neg_rate=cfg.neg_rate)

    def loss_of(batch):
        inputs, labels = _tensors(batch, bank, engine.device)
        return loss_fn(engine(*inputs) - offset, labels)

    out = fit(engine, batches, loss_of, epochs=cfg.epochs, out_dir=cfg.out_dir, save_every=cfg.save_every,
              name=f"PAAG {mcfg.rung}", max_steps=cfg.max_steps, progress=cfg.progress, rank=rank,
              stop_after=stop_after)
    if out["stopped"]:
        return {"step": out["step"], "stopped": True}
    if rank == 0:
        save_model(engine.module, cfg, Path(cfg.out_dir) / MODEL_FILE)
    return {"step": out["step"], "resumed_from": out["resumed_from"], "stopped": False, "loss": out["loss"]}


def click_rate(warehouse: str) -> float:
    """Share of clicked training rows (one pass over the label column only)."""
    n = k = 0
    for g in read_columns(C.PAAG_EXAMPLES, warehouse, ["clicked"], {"split": "train"}):
        n, k = n + len(g["clicked"]), k + int(g["clicked"].sum())
    return min(max(k / max(n, 1), 1e-4), 1 - 1e-4)


TRAINING_FIELDS = ("warehouse", "epochs", "batch_size", "lr", "neg_rate", "max_steps", "seed")


def training_settings(cfg: TrainConfig) -> dict:
    """What, beside the model's configuration, decides the weights a run ends with (saved with them)."""
    return {f: getattr(cfg, f) for f in TRAINING_FIELDS}


def save_model(model: PAAG, cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "model": model.cfg.to_dict(), "training": training_settings(cfg),
                "text_encoder": cfg.text_encoder, "image_encoder": cfg.image_encoder}, path)


@torch.no_grad()
def predict(model: PAAG, bank: FeatureBank, warehouse: str, split: str = "test", batch_size: int = 4096):
    """(scores, labels, rows) of every example of a split, in table order."""
    model.eval()
    scores, labels, rows = [], [], []
    for batch in example_batches(warehouse, split, batch_size, seed=None):
        inputs, y = _tensors(batch, bank, "cpu")
        scores.append(model(*inputs).numpy())
        labels.append(y.numpy())
        rows.append(batch)
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return np.concatenate(scores), np.concatenate(labels), cols


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic with average ranks for ties."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both clicked and non-clicked rows")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    bounds = np.flatnonzero(np.r_[True, s[1:] != s[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # average rank of each run of equal scores
        ranks[lo:hi] = (lo + hi + 1) / 2.0
    rank_of = np.empty(len(s))
    rank_of[order] = ranks
    return float((rank_of[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def require_features(cfg: TrainConfig) -> TrainConfig:
    """`cfg`, or ConfigError naming the missing feature table (before any work)."""
    require_tables(FEATURE_TABLES, cfg.warehouse)
    return cfg


def train_and_test(cfg: TrainConfig) -> dict:
    """Train, then (rank 0) the test AUROC on the held-out days, into <out_dir>/metrics.json and one line."""
    summary = train(cfg)
    if torch.distributed.get_rank() == 0:
        model, _ = load_model(Path(cfg.out_dir) / MODEL_FILE)
        bank = FeatureBank.load(cfg.warehouse, cfg.text_encoder, cfg.image_encoder)
        scores, labels, _ = predict(model, bank, cfg.warehouse, "test")
        summary["test_auroc"] = auroc(scores, labels)
        summary["test_rows"] = int(len(labels))
        Path(cfg.out_dir, "metrics.json").write_text(json.dumps(summary, indent=2))
        print(f"PAAG {cfg.model.rung}: {summary['step']} steps, test AUROC {summary['test_auroc']:.4f} "
              f"on {summary['test_rows']:,} held-out impressions -> {cfg.out_dir}/{MODEL_FILE}")
    return summary
