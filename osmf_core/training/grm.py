"""Train and score the group-aware reward model (eq. 8) on feat.grm_examples with DeepSpeed and petastorm.

Initialised from the pre-trained G-MLLM; each row is a same-product pair of creatives in one group with
the label "a got the higher CTR in the group". The GRM is a Bradley-Terry model: it scores each creative
of the pair on its own (one image per instruction) and P(a beats b) = sigmoid(r(a) - r(b)), so the order
the pair is shown in cannot matter (position swaps only flip which logit is which). Variants for Figure
3: without the group token (use_group False, CAIG-like) and with 0/1/5/10 of the group's percentile points.
`score_candidates` ranks any number of candidate images for a group (Group-DPO).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from osmf_core.data import catalog as C
from osmf_core.data.config import default_warehouse
from osmf_core.data.reader import row_batches, run_of
from osmf_core.features.split import training_partition
from osmf_core.models.gmllm.grm import GRM, reward_inputs
from osmf_core.models.gmllm.model import GroupLlava, to_device
from osmf_core.training.engine import EngineConfig, build_engine
from osmf_core.training.gmllm import MODEL_SUBDIR, count_rows
from osmf_core.training.loop import fit, init_distributed

PAIR_TABLES = {"group": C.GRM_EXAMPLES, "product": C.PRODUCT_PAIRS}
FIELDS = ["product_id", "group_id", "creative_a", "creative_b", "title", "image_a", "image_b", "group_features",
          "label"]


@dataclass
class GRMConfig:
    # data
    # Delta warehouse with feat.grm_examples; default $OSMF_WAREHOUSE, else ./warehouse (as the Spark jobs)
    warehouse: str = field(default_factory=default_warehouse)
    run_date: str = ""  # which run (default: the latest)
    # model
    gmllm: str = "runs/gmllm/model"  # pre-trained G-MLLM (make pretrain-gmllm)
    # the reward model reads the group token (--no-group: the group-agnostic, CAIG-like reward model)
    use_group: bool = field(default=True, metadata={"flag": "group"})
    n_points: int = field(default=-1, metadata={"flag": "points"})  # percentile points the group token reads (-1: all)
    # the pairs it learns from: group (feat.grm_examples, CTRs within a group: the GRM) or product
    # (feat.product_pairs, CTRs over the product's whole audience: the one-size reward model, as CAIG's)
    pairs: str = field(default="group", metadata={"choices": ("group", "product")})
    # GRM head: "last" (linear on the last token), "bilinear" (mean image style x last token) or "patches" (the
    # image tokens side by side x last token); see osmf_core.models.gmllm.grm.GRM
    pooling: str = field(default="bilinear", metadata={"choices": GRM.POOLINGS})
    max_len: int = 128  # tokens per row
    # optimisation
    deepspeed_config: str = "cluster/deepspeed/gmllm.json"
    engine: EngineConfig = field(default_factory=EngineConfig)
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-4  # the G-MLLM's parameters
    head_lr: float = 2e-3  # the reward heads (0: lr)
    train_vision: bool = False  # fine-tune the vision tower too (off: it stays the frozen ImageNet trunk)
    train_lm: bool = True  # False: the language model and group MLP stay as pre-trained too (heads only)
    swap: bool = True  # position-swap augmentation
    max_steps: int = 0
    shuffle_buffer: int = 8192
    seed: int = 0
    # output
    out_dir: str = "runs/grm"
    save_every: int = 200
    progress: bool = True

    def __post_init__(self):
        if min(self.epochs, self.batch_size, self.save_every) < 1 or self.lr <= 0 or self.head_lr < 0:
            raise ValueError("epochs, batch_size, save_every must be >= 1, lr > 0 and head_lr >= 0")
        if self.n_points < -1:
            raise ValueError("n_points must be -1 (all) or >= 0")
        if self.pairs not in PAIR_TABLES:
            raise ValueError(f"pairs must be group or product, got {self.pairs!r}")
        if self.pairs == "product" and self.use_group:
            raise ValueError("--pairs product has no group to read: train it with --no-group")


def pair_inputs(grm: GRM, batch: dict, max_len: int, device, swap: np.ndarray | None = None) -> dict:
    """Model inputs of a batch of B pairs: 2B one-image rows, the first-shown creatives then the second-shown
    ones; rows where `swap` is True show (b, a) instead of (a, b)."""
    swap = np.zeros(len(batch["label"]), bool) if swap is None else swap
    first = [b if s else a for a, b, s in zip(batch["image_a"], batch["image_b"], swap)]
    second = [a if s else b for a, b, s in zip(batch["image_a"], batch["image_b"], swap)]
    titles, groups = list(batch["title"]), list(batch["group_features"])
    return reward_inputs(grm, titles * 2, first + second, groups * 2, max_len, device)


def pair_loss(model, grm: GRM, batch: dict, max_len: int, device, swap: np.ndarray | None) -> torch.Tensor:
    """Cross-entropy of eq. 8 on a batch; swapped rows show (b, a) and carry the flipped label.
    `model` is what runs the forward pass (the DeepSpeed engine, or `grm` itself)."""
    label = batch["label"].astype(np.int64)
    if swap is not None:
        label = np.where(swap, 1 - label, label)
    logits = model(**pair_inputs(grm, batch, max_len, device, swap))
    return torch.nn.functional.cross_entropy(logits, to_device({"y": torch.from_numpy(label)}, device)["y"])


def training_pairs(warehouse: str, run_date: str, batch_size: int, seed: int | None, shard: int = 0, shards: int = 1,
                   buffer_rows: int = 8192, pairs: str = "group"):
    """A reward model's training stream: shuffled batches of the run's group-level (or product-level) pairs of
    the products training may see (never a held-out product's, features.split)."""
    return row_batches(PAIR_TABLES[pairs], warehouse, FIELDS, training_partition(run_date), batch_size, seed=seed,
                       shard=shard, shards=shards, buffer_rows=buffer_rows, drop_last=True)


def load_grm(cfg: GRMConfig) -> GRM:
    base = GroupLlava.load(cfg.gmllm)
    return GRM(base, cfg.use_group, None if cfg.n_points < 0 else cfg.n_points, cfg.pooling)


def param_groups(grm: GRM, cfg: GRMConfig) -> list[dict]:
    """What trains, at which learning rate: the reward heads (head_lr) and the G-MLLM (lr), without its
    vision tower when train_vision is False, only the heads when train_lm and train_vision are False."""
    if not cfg.train_lm:
        grm.base.requires_grad_(False)
    grm.base.llava.model.vision_tower.requires_grad_(cfg.train_vision)
    head = [p for n, p in grm.named_parameters() if p.requires_grad and not n.startswith("base.")]
    rest = [p for n, p in grm.named_parameters() if p.requires_grad and n.startswith("base.")]
    return [g for g in ({"params": rest}, {"params": head, "lr": cfg.head_lr or cfg.lr}) if g["params"]]


def train_grm(cfg: GRMConfig, stop_after: int | None = None) -> dict:
    """Train (or resume) a GRM; saved to <out_dir>/model with its head."""
    rank, world = init_distributed()
    run_date = run_of(C.GRM_EXAMPLES, cfg.warehouse, cfg.run_date, needs=(PAIR_TABLES[cfg.pairs],))
    part = training_partition(run_date)  # never a held-out product's pair
    torch.manual_seed(cfg.seed)
    grm = load_grm(cfg)
    n_rows = count_rows(PAIR_TABLES[cfg.pairs], cfg.warehouse, part)
    steps = cfg.epochs * max(1, n_rows // (cfg.batch_size * world))
    engine, _ = build_engine(grm, param_groups(grm, cfg), cfg.deepspeed_config, cfg.batch_size, cfg.lr,
                             min(steps, cfg.max_steps) if cfg.max_steps else steps, cfg.engine)
    def batches(epoch: int):
        return training_pairs(cfg.warehouse, run_date, cfg.batch_size, seed=cfg.seed * 1000 + epoch, shard=rank,
                              shards=world, buffer_rows=cfg.shuffle_buffer, pairs=cfg.pairs)

    def loss_of(batch):
        rng = np.random.default_rng([cfg.seed, int(batch["creative_a"][0]), int(batch["creative_b"][0])])
        swap = rng.random(len(batch["label"])) < 0.5 if cfg.swap else None
        return pair_loss(engine, engine.module, batch, cfg.max_len, engine.device, swap)

    name = "GRM" if cfg.use_group else "GRM no group"
    out = fit(engine, batches, loss_of, epochs=cfg.epochs, out_dir=cfg.out_dir, save_every=cfg.save_every,
              name=name if cfg.n_points < 0 else f"GRM {cfg.n_points} points", max_steps=cfg.max_steps,
              progress=cfg.progress, rank=rank, stop_after=stop_after)
    if out["stopped"]:
        return out
    summary = {"run_date": run_date, "rows": n_rows, "step": out["step"], "resumed_from": out["resumed_from"],
               "loss": out["loss"], "config": asdict(cfg)}
    if rank == 0:
        engine.module.save(Path(cfg.out_dir) / MODEL_SUBDIR)
        Path(cfg.out_dir, "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def score_pairs(grm: GRM, warehouse: str, run_date: str, split: str = "test", batch_size: int = 64,
                max_len: int = 128) -> dict:
    """P(a beats b) shown as (a, b) and as (b, a), with the rows' ids and labels, in table order."""
    grm.eval()
    device = next(grm.parameters()).device
    cols: dict[str, list] = {k: [] for k in ("product_id", "group_id", "creative_a", "creative_b", "label")}
    p_ab, p_ba = [], []
    for batch in row_batches(C.GRM_EXAMPLES, warehouse, FIELDS, {"run_date": run_date, "split": split}, batch_size,
                             seed=None):
        n = len(batch["label"])
        for swap, out in ((np.zeros(n, bool), p_ab), (np.ones(n, bool), p_ba)):
            logits = grm(**pair_inputs(grm, batch, max_len, device, swap))
            out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())  # P(first shown wins)
        for k in cols:
            cols[k].append(batch[k])
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["p_ab"], out["p_ba"] = np.concatenate(p_ab), np.concatenate(p_ba)
    return out


def pair_metrics(p_ab: np.ndarray, p_ba: np.ndarray, label: np.ndarray, groups: np.ndarray,
                 min_pairs: int = 5) -> dict:
    """Pair Accuracy (P(a wins) > 0.5 against the label), per group key, the worst group with at least
    `min_pairs` pairs, and the symmetry error |p(a,b) + p(b,a) - 1|."""
    label = np.asarray(label).astype(bool)
    hit = (np.asarray(p_ab) > 0.5) == label
    per = {}
    for g in np.unique(groups):
        m = groups == g
        if m.sum() >= min_pairs:
            per[str(g)] = float(hit[m].mean())
    return {"pair_accuracy": float(hit.mean()) if len(hit) else float("nan"),
            "per_group": per,
            "worst_group_accuracy": min(per.values()) if per else float("nan"),
            "symmetry_error": float(np.mean(np.abs(np.asarray(p_ab) + np.asarray(p_ba) - 1))) if len(hit) else float("nan"),
            "pairs": int(len(hit))}


def resolve_run(cfg: GRMConfig) -> GRMConfig:
    """`cfg` with its run of feat.grm_examples (the latest when not given); ConfigError when there is none."""
    cfg.run_date = run_of(C.GRM_EXAMPLES, cfg.warehouse, cfg.run_date, needs=(PAIR_TABLES[cfg.pairs],))
    return cfg


def train_and_score(cfg: GRMConfig) -> dict:
    """Train, then (rank 0) one line with the Pair Accuracy on the held-out products' pairs."""
    s = train_grm(cfg)
    if torch.distributed.get_rank() == 0:
        scores = score_pairs(GRM.load(f"{cfg.out_dir}/{MODEL_SUBDIR}"), cfg.warehouse, s["run_date"], max_len=cfg.max_len)
        m = pair_metrics(scores["p_ab"], scores["p_ba"], scores["label"], scores["product_id"] * 1000 + scores["group_id"])
        name = "GRM" if cfg.use_group else f"GRM (no group token, {cfg.pairs}-level pairs)"
        print(f"{name}: {s['step']} steps; held-out Pair Accuracy "
              f"{m['pair_accuracy']:.4f} on {m['pairs']:,} pairs, symmetry error {m['symmetry_error']:.4f} "
              f"-> {cfg.out_dir}/{MODEL_SUBDIR}")
    return s
