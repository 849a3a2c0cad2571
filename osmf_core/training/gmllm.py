"""Pre-train the G-MLLM on feat.instructions (the four Table 5 tasks) with DeepSpeed, fed by petastorm.

Causal-LM loss on the response tokens only; the instruction, the group token and the image patches are
context. The engine (ZeRO stage, precision, compile) comes from training/engine.py, a warmup + cosine
schedule from the DeepSpeed JSON (cluster/deepspeed/), checkpoints and resume from training/loop.py. The
result is saved with save_pretrained (LLaVA and its tokenizer) plus the group MLP, in <out_dir>/model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from osmf_core.data import catalog as C
from osmf_core.data.config import default_warehouse
from osmf_core.data.reader import read_columns, row_batches, run_of
from osmf_core.features.split import training_partition
from osmf_core.models.gmllm.builders import build_small, build_tiny, from_local
from osmf_core.models.gmllm.grm import grm_instruction
from osmf_core.models.gmllm.head import scored
from osmf_core.models.gmllm.model import SMALL, GMLLMConfig, GroupLlava, approx_tokens, encode
from osmf_core.models.gmllm.tokens import train_tokenizer
from osmf_core.training.engine import EngineConfig, build_engine
from osmf_core.training.loop import bucket_window, fit, init_distributed, length_bucketed

FIELDS = ["task", "product_id", "instruction", "response", "image", "group_features"]  # product_id: the split is checkable
MODEL_SUBDIR, TOKENIZER_SUBDIR = "model", "tokenizer"


@dataclass
class PretrainConfig:
    # data
    # Delta warehouse with feat.instructions; default $OSMF_WAREHOUSE, else ./warehouse (as the Spark jobs)
    warehouse: str = field(default_factory=default_warehouse)
    run_date: str = ""  # which run of feat.instructions (default: the latest)
    max_len: int = 384  # tokens per row (image and group tokens included); longer rows lose their tail
    # model
    base: str = ""  # empty: the tiny random profile; "smollm2": the small real one; else a local LLaVA directory
    model: GMLLMConfig = field(default_factory=GMLLMConfig)
    # the group token in every instruction (--no-group: left out, so the model never learns from groups: the
    # G-MLLM of "OSMF without group", the paper's ablation)
    use_group: bool = field(default=True, metadata={"flag": "group"})
    # optimisation (batch size and learning rate override the DeepSpeed JSON)
    deepspeed_config: str = "cluster/deepspeed/gmllm.json"  # ZeRO-2 (several processes), AdamW, WarmupCosineLR
    engine: EngineConfig = field(default_factory=EngineConfig)
    epochs: int = 8
    batch_size: int = 16  # per process
    lr: float = 1e-3
    max_steps: int = 0  # stop after this many steps (0 = all epochs)
    shuffle_buffer: int = 4096  # rows shuffled together
    # batches pooled and sorted by length, so a batch pads to rows of about its own length (0: off; default:
    # 16 on a GPU, off on a CPU)
    length_buckets: int | None = None
    seed: int = 0
    # output
    out_dir: str = "runs/gmllm"  # checkpoints/, tokenizer/, model/ and metrics.json
    save_every: int = 100  # checkpoint every N steps
    progress: bool = True  # tqdm bar with the loss
    eval_rows: int = 0  # rows per task scored for metrics.json after training (0: every row)

    def __post_init__(self):
        if self.length_buckets is not None and self.length_buckets < 0:
            raise ValueError("length_buckets must be >= 0")
        if min(self.epochs, self.batch_size, self.save_every) < 1 or self.lr <= 0 or self.eval_rows < 0:
            raise ValueError("epochs, batch_size, save_every must be >= 1, lr > 0 and eval_rows >= 0")
        tokens = (self.model.image_size // self.model.patch_size) ** 2
        if self.max_len < tokens + 16:
            raise ValueError(f"max_len {self.max_len} leaves no room for text after {tokens} image tokens")


# ---------------------------------------------------------------------------------- batches
def batch_inputs(model: GroupLlava, batch: dict, max_len: int, device, use_group: bool = True) -> dict:
    return encode(model, batch["instruction"], batch["response"], max_len, use_group, images=batch["image"],
                  group_features=batch["group_features"], device=device)


def corpus(warehouse: str, run_date: str) -> list[str]:
    """The texts the tiny profile's tokenizer is trained on: instructions, responses, GRM instructions."""
    texts, titles = [], set()
    for g in read_columns(C.INSTRUCTIONS, warehouse, ["instruction", "response", "task"], training_partition(run_date)):
        texts.extend(str(t) for t in g["instruction"])
        texts.extend(str(t) for t in g["response"])
        titles.update(str(r) for r, t in zip(g["response"], g["task"]) if t == "product_understanding")
    texts.extend(grm_instruction(t) for t in sorted(titles))
    return texts + ["USER: ASSISTANT:"]


def build_model(cfg: PretrainConfig, run_date: str) -> GroupLlava:
    """The tiny profile (tokenizer trained once and kept in out_dir, so a resumed run has the same one),
    the small real one, or a local LLaVA."""
    if cfg.base == SMALL:
        torch.manual_seed(cfg.seed)  # the projector and the group MLP start random
        return build_small(cfg.model)
    if cfg.base:
        return from_local(cfg.base, cfg.model)
    from transformers import AutoTokenizer
    tok_dir = Path(cfg.out_dir) / TOKENIZER_SUBDIR
    if (tok_dir / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tok = train_tokenizer(corpus(cfg.warehouse, run_date), cfg.model.vocab_size)
        tok.save_pretrained(tok_dir)
    torch.manual_seed(cfg.seed)
    return build_tiny(cfg.model, tok)


def training_rows(warehouse: str, run_date: str, batch_size: int, seed: int | None, shard: int = 0, shards: int = 1,
                  buffer_rows: int = 4096):
    """The pre-training stream: shuffled batches of the run's instruction rows of the products training may
    see (never a held-out product's, features.split)."""
    return row_batches(C.INSTRUCTIONS, warehouse, FIELDS, training_partition(run_date), batch_size, seed=seed,
                       shard=shard, shards=shards, buffer_rows=buffer_rows, drop_last=True)


def count_rows(t: C.Table, warehouse: str, partition: dict) -> int:
    return sum(len(g["product_id"]) for g in read_columns(t, warehouse, ["product_id"], partition))


# ---------------------------------------------------------------------------------- training
def pretrain(cfg: PretrainConfig, stop_after: int | None = None) -> dict:
    """Pre-train (or resume) the G-MLLM; save it to <out_dir>/model. `stop_after`: see loop.fit."""
    rank, world = init_distributed()
    run_date = run_of(C.INSTRUCTIONS, cfg.warehouse, cfg.run_date)
    part = training_partition(run_date)  # never a held-out product's row
    model = build_model(cfg, run_date)
    n_rows = count_rows(C.INSTRUCTIONS, cfg.warehouse, part)
    steps = cfg.epochs * max(1, n_rows // (cfg.batch_size * world))
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    if not cfg.use_group:  # no row shows the group token: the group MLP is neither read nor trained (nor decayed)
        model.group_mlp.requires_grad_(False)
    engine, _ = build_engine(model, [p for p in model.parameters() if p.requires_grad], cfg.deepspeed_config,
                             cfg.batch_size, cfg.lr, steps, cfg.engine)

    window = bucket_window(cfg.length_buckets)

    def batches(epoch: int):
        rows = training_rows(cfg.warehouse, run_date, cfg.batch_size, seed=cfg.seed * 1000 + epoch, shard=rank,
                             shards=world, buffer_rows=cfg.shuffle_buffer)
        if not window:
            return rows
        return length_bucketed(rows, lambda b: approx_tokens(b["instruction"], b["response"], model.n_image_tokens),
                               window, seed=cfg.seed * 1000 + epoch)

    def loss_of(batch):
        return engine(**batch_inputs(engine.module, batch, cfg.max_len, engine.device, cfg.use_group)).loss

    out = fit(engine, batches, loss_of, epochs=cfg.epochs, out_dir=cfg.out_dir, save_every=cfg.save_every,
              name="G-MLLM", max_steps=cfg.max_steps, progress=cfg.progress, rank=rank, stop_after=stop_after)
    if out["stopped"]:
        return out
    summary = {"run_date": run_date, "rows": n_rows, "step": out["step"], "resumed_from": out["resumed_from"],
               "loss": out["loss"], "first_losses": out["losses"][:5], "config": asdict(cfg)}
    if rank == 0:
        engine.module.save(Path(cfg.out_dir) / MODEL_SUBDIR)
        summary["task_loss"] = task_losses(engine.module, cfg.warehouse, run_date, cfg.max_len,
                                           max_rows=cfg.eval_rows, use_group=cfg.use_group)
        Path(cfg.out_dir, "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def task_losses(model: GroupLlava, warehouse: str, run_date: str, max_len: int = 384, batch_size: int = 32,
                max_rows: int = 0, use_group: bool = True) -> dict:
    """Mean response-token cross-entropy per task over the run's rows (perplexity = exp of it); over the
    first `max_rows` rows of each task in table order when given."""
    model.eval()
    device = next(model.parameters()).device
    total: dict[str, list[float]] = {}
    seen: dict[str, int] = {}
    for batch in row_batches(C.INSTRUCTIONS, warehouse, FIELDS, training_partition(run_date), batch_size, seed=None):
        for task in np.unique(batch["task"]):
            rows = np.flatnonzero(batch["task"] == task)
            if max_rows:
                rows = rows[:max(0, max_rows - seen.get(str(task), 0))]
                if not len(rows):
                    continue
            seen[str(task)] = seen.get(str(task), 0) + len(rows)
            sub = {k: v[rows] for k, v in batch.items()}
            inputs = batch_inputs(model, sub, max_len, device, use_group)
            logp = model(**inputs).token_logprobs  # through the head's region: no logits kept
            acc = total.setdefault(str(task), [0.0, 0.0])
            acc[0] -= float(logp.sum())
            acc[1] += float(scored(inputs["labels"]).sum())
    # None: every response of that task was cut off by max_len (nothing to score)
    return {t: round(s / n, 4) if n else None for t, (s, n) in sorted(total.items())}


def resolve_run(cfg: PretrainConfig) -> PretrainConfig:
    """`cfg` with its run of feat.instructions (the latest when not given); ConfigError when there is none."""
    cfg.run_date = run_of(C.INSTRUCTIONS, cfg.warehouse, cfg.run_date)
    return cfg


def pretrain_and_report(cfg: PretrainConfig) -> dict:
    """Pre-train, then one line with the response loss per task."""
    s = pretrain(cfg)
    if "task_loss" in s:
        losses = ", ".join(f"{t} {v:.3f}" if v is not None else f"{t} n/a (responses cut by --max-len)"
                           for t, v in s["task_loss"].items())
        print(f"G-MLLM: {s['step']} steps on {s['rows']:,} instruction rows of {s['run_date']}; response loss "
              f"per task: {losses} -> {cfg.out_dir}/{MODEL_SUBDIR}")
    return s
