"""Throughput of G-MLLM pre-training and GRM training under DeepSpeed: tokens per second, peak memory and
model FLOPs utilisation (MFU), per precision, side by side with a baseline precision (the first listed)
(jobs/bench_gmllm.py is its command line).

This module needs torch, DeepSpeed and transformers only, never Spark, Delta or petastorm: a GPU node runs
it on the two Parquet files that gmllm_export sampled from the warehouse on the data side.

Models (shape): `tiny`, the tiny profile (its tokenizer trained on the sampled rows); or the small
profile's architecture (MobileNetV2 tower + projector + a SmolLM2-shaped Llama) at one of
models.gmllm.SMOLLM2_SHAPES with random weights, read with SmolLM2's tokenizer from `tokenizer` (default:
the copy that the small profile caches on its first load; only tokenizer.json and tokenizer_config.json
are read, so a GPU node needs those two files and the exported rows, not the weights).

What is timed: `steps` DeepSpeed engine steps (forward, backward, ZeRO-2 optimizer step, the config of
cluster/deepspeed/gmllm.json with bf16 switched by the precision and torch's AdamW) after `warmup` steps, on
batches of the sampled rows encoded before the clock starts (tokenising and decoding images are left out; in
the jobs they run inside the step loop). Each (phase, precision) runs in a fresh process, so peak memory is
its own.
  tokens/s     positions the language model reads that are not padding (text, image patches, group token)
  FLOPs        counted by torch.utils.flop_counter over a forward and backward of each distinct batch
               (optimizer excluded), averaged over the batches the timed steps run
  MFU          FLOPs per step / step time / the device's dense peak for that precision (peak_tflops
               overrides the table; none on a CPU)
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from osmf_core.data.config import ConfigError, default_warehouse
from osmf_core.data.flags import add_config_args
from osmf_core.data.reports import write_report
from osmf_core.models.gmllm.builders import SMOLLM2_SHAPES, build_small_shape, build_tiny, osmf_cache
from osmf_core.models.gmllm.grm import GRM
from osmf_core.models.gmllm.model import GMLLMConfig, encode
from osmf_core.models.gmllm.tokens import train_tokenizer
from osmf_core.training.loop import ds_config, init_distributed

PHASES = ("pretrain", "grm")
PRECISIONS = ("fp32", "bf16")
# dense peak TFLOP/s by device name and precision (fp32 without TF32: torch's default for matmuls)
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 66.9}, "H200": {"bf16": 989.4, "fp32": 66.9},
               "A100": {"bf16": 312.0, "fp32": 19.5}}
PRETRAIN_FILE, GRM_FILE = "pretrain.parquet", "grm.parquet"
MAX_LEN = {"pretrain": 384, "grm": 128}  # tokens per row, PretrainConfig's and GRMConfig's defaults
ROWS_DIR = "runs/bench_gmllm/rows"


@dataclass
class ExportConfig:
    """The sample that gmllm_export writes and the timed runs read."""
    warehouse: str = field(default_factory=default_warehouse)  # Delta warehouse root
    out: str = ROWS_DIR  # folder of the two Parquet files
    rows: int = 1024  # instruction rows
    pairs: int = 512  # GRM pairs
    seed: int = 0  # seed of the sample


@dataclass
class StepConfig:
    """What every timed (phase, precision) run shares."""
    rows: str = ROWS_DIR  # what export wrote
    shape: str = field(default="tiny", metadata={"choices": ("tiny", *SMOLLM2_SHAPES)})  # tiny, or a SmolLM2 shape (random weights)
    tokenizer: str = ""  # SmolLM2's tokenizer directory (SmolLM2 shapes; default: the small profile's cached copy)
    deepspeed_config: str = "cluster/deepspeed/gmllm.json"  # DeepSpeed JSON (bf16 switched by the precision)
    batch_size: int = 16  # per step; a GRM step reads 2x rows (pairs)
    steps: int = 20  # timed engine steps
    warmup: int = 3  # engine steps before the clock starts
    distinct_batches: int = 8  # encoded batches the steps cycle over
    peak_tflops: float = 0.0  # dense peak for MFU (0: from the table)
    seed: int = 0  # seed of the weights and of the batches


@dataclass
class BenchConfig(StepConfig):
    """The benchmark: every phase at every precision, each in a fresh process."""
    phases: tuple[str, ...] = PHASES  # phases timed, in order
    precisions: tuple[str, ...] = ()  # first = baseline (default: fp32,bf16 on a GPU, fp32 on a CPU)
    report: str = "reports/bench_gmllm.json"  # where the report goes


@dataclass
class OneConfig(StepConfig):
    """One (phase, precision), timed in this process."""
    phase: str | None = field(default=None, metadata={"choices": PHASES})  # pretrain or grm (required)
    precision: str | None = field(default=None, metadata={"choices": PRECISIONS})  # fp32 or bf16 (required)
    profile: str = ""  # write torch.profiler's top operators of the timed steps here
    local_rank: int = 0  # set by the DeepSpeed launcher

    def __post_init__(self):
        if self.phase is None or self.precision is None:
            raise ConfigError("one needs --phase and --precision")


class StepFailed(RuntimeError):
    """A (phase, precision) process failed."""


def add_args(ap, cls) -> None:
    """The flags of a StepConfig subclass: StepConfig's (with their comments), then its own."""
    add_config_args(ap, StepConfig)
    add_config_args(ap, cls, skip={f.name for f in dataclasses.fields(StepConfig)})


def flags_of(cfg, cls=None) -> list[str]:
    """The fields of `cfg` (those of dataclass `cls` if given) as flags, for a child process."""
    return [a for f in dataclasses.fields(cls or cfg) for a in (f"--{f.name}", _flag_value(getattr(cfg, f.name)))]


def _flag_value(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


# ------------------------------------------------------------------------------ one (phase, precision)
def build(shape: str, rows_dir: Path, tokenizer: str, seed: int):
    """The model of `shape`, its group token as wide as the rows' group features (PAAG's d times 1 + the
    percentile points)."""
    torch.manual_seed(seed)
    width = len(pd.read_parquet(rows_dir / GRM_FILE, columns=["group_features"])["group_features"].iloc[0])
    points = GMLLMConfig.group_points
    if width % (1 + points):
        raise ValueError(f"group features of {width} values are not {1 + points} vectors")
    cfg = GMLLMConfig(group_dim=width // (1 + points))
    if shape == "tiny":
        texts = []
        for name, cols in ((PRETRAIN_FILE, ("instruction", "response")), (GRM_FILE, ("instruction",))):
            frame = pd.read_parquet(rows_dir / name, columns=list(cols))
            texts += [str(t) for c in cols for t in frame[c]]
        return build_tiny(cfg, train_tokenizer(texts + ["USER: ASSISTANT:"], cfg.vocab_size))
    from transformers import AutoTokenizer  # here, as the builders do: transformers is slow to import
    return build_small_shape(cfg, shape, AutoTokenizer.from_pretrained(tokenizer))


def encoded_batches(model, phase: str, rows_dir: Path, batch_size: int, max_len: int, n_batches: int,
                    seed: int) -> list[dict]:
    """`n_batches` batches of sampled rows as model inputs (CPU tensors). A GRM batch of B pairs is 2B
    one-image rows, as training/grm.pair_inputs builds them."""
    frame = pd.read_parquet(rows_dir / (PRETRAIN_FILE if phase == "pretrain" else GRM_FILE))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        b = frame.iloc[rng.choice(len(frame), batch_size, replace=len(frame) < batch_size)]
        if phase == "pretrain":
            enc = encode(model, list(b["instruction"]), list(b["response"]), max_len, images=list(b["image"]),
                         group_features=list(b["group_features"]))
        else:
            enc = encode(model, list(b["instruction"]) * 2, None, max_len, True,
                         list(b["image_a"]) + list(b["image_b"]), list(b["group_features"]) * 2)
            enc["label"] = torch.from_numpy(b["label"].to_numpy().astype(np.int64))
        out.append(enc)
    return out


def step_loss(module, phase: str, batch: dict, device) -> torch.Tensor:
    inputs = {k: v.to(device) if v is not None else None for k, v in batch.items() if k != "label"}
    if phase == "pretrain":
        return module(**inputs).loss
    return torch.nn.functional.cross_entropy(module(**inputs).float(), batch["label"].to(device))


def peak_tflops(precision: str, override: float) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((p[precision] for k, p in PEAK_TFLOPS.items() if k in name), None)


def run_one(cfg: OneConfig) -> dict:
    """Build, count FLOPs, wrap in a DeepSpeed engine, warm up, time; the figures of one (phase, precision)."""
    import deepspeed  # here, as training does: slow to import, and only this process needs it
    init_distributed()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    rows_dir = Path(cfg.rows)
    base = build(cfg.shape, rows_dir, cfg.tokenizer, cfg.seed)
    model = base if cfg.phase == "pretrain" else GRM(base, use_group=True, pooling="bilinear")
    if cfg.phase == "grm":  # as train_grm: the vision tower stays frozen
        base.llava.model.vision_tower.requires_grad_(False)
    batches = encoded_batches(base, cfg.phase, rows_dir, cfg.batch_size, MAX_LEN[cfg.phase], cfg.distinct_batches,
                              cfg.seed)
    model.to(device)
    per_batch = []
    for batch in batches:  # fp32, before DeepSpeed: FLOPs do not depend on precision
        with FlopCounterMode(display=False) as counter:
            step_loss(model, cfg.phase, batch, device).backward()
        per_batch.append(counter.get_total_flops())
    model.zero_grad(set_to_none=True)
    # the mean over the batches the timed steps run (they cycle over the distinct batches)
    flops = sum(per_batch[i % len(batches)] for i in range(cfg.warmup, cfg.warmup + cfg.steps)) / cfg.steps
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    ds = ds_config(cfg.deepspeed_config, cfg.batch_size, 1e-4, cfg.warmup + cfg.steps)
    ds["bf16"] = {"enabled": cfg.precision == "bf16"}
    ds["optimizer"]["params"]["torch_adam"] = True  # torch's AdamW on every device: no JIT-built kernel
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens = positions = 0
    t0, prof = None, None
    for i in range(cfg.warmup + cfg.steps):
        if i == cfg.warmup:
            sync()
            if cfg.profile:  # the timed steps under torch.profiler (slower: the figures are then its own)
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if cuda else []))
                prof.__enter__()
            t0 = time.perf_counter()
        batch = batches[i % len(batches)]
        loss = step_loss(engine, cfg.phase, batch, engine.device)
        engine.backward(loss)
        engine.step()
        if i >= cfg.warmup:
            tokens += int(batch["attention_mask"].sum())
            positions += batch["attention_mask"].numel()
    sync()
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        Path(cfg.profile).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.profile).write_text(prof.key_averages().table(sort_by=key, row_limit=25))
    step_s = seconds / cfg.steps
    peak = peak_tflops(cfg.precision, cfg.peak_tflops)
    achieved = flops / step_s
    out = {"phase": cfg.phase, "shape": cfg.shape, "precision": cfg.precision, "device": str(
        torch.cuda.get_device_name() if cuda else "cpu"), "params": params,
           "trainable_params": sum(p.numel() for p in trainable), "batch_size": cfg.batch_size,
           "rows_per_step": len(batches[0]["input_ids"]), "steps": cfg.steps, "step_s": step_s,
           "tokens_per_s": tokens / seconds, "positions_per_s": positions / seconds,
           "mean_tokens_per_row": tokens / cfg.steps / len(batches[0]["input_ids"]),
           "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
           "peak_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
           "loss_last": float(loss.item())}
    del engine, model, base
    gc.collect()
    return out


# ------------------------------------------------------------------------------ the benchmark and its table
def show(results: list[dict]) -> None:
    base = {r["phase"]: r for r in results if r["precision"] == results[0]["precision"]}
    print(f"{'phase':<9} {'precision':<9} {'step s':>8} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>7} "
          f"{'peak GiB':>9} {'x tokens/s':>10} {'x memory':>9}")
    for r in results:
        b = base[r["phase"]]
        mem = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
        mem_x = f"{r['peak_memory_gib'] / b['peak_memory_gib']:.2f}" if r["peak_memory_gib"] else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{r['phase']:<9} {r['precision']:<9} {r['step_s']:>8.4f} {r['tokens_per_s']:>11,.0f} "
              f"{r['achieved_tflops']:>8.2f} {mfu:>7} {mem:>9} {r['tokens_per_s'] / b['tokens_per_s']:>10.2f} "
              f"{mem_x:>9}")


def bench(cfg: BenchConfig, script: str) -> dict:
    """Every phase at every precision, each a `script one ...` process of its own; prints the table, writes and
    returns the report. ConfigError when the rows or the tokenizer are missing, StepFailed when a run fails."""
    for name in (PRETRAIN_FILE, GRM_FILE):
        if not (Path(cfg.rows) / name).is_file():
            raise ConfigError(f"{Path(cfg.rows) / name} missing: run `python jobs/bench_gmllm.py export` first")
    if cfg.shape != "tiny" and not cfg.tokenizer:  # the copy the small profile keeps (models.gmllm.smollm2)
        cfg = dataclasses.replace(cfg, tokenizer=str(osmf_cache() / "smollm2-135m-instruct"))
    if cfg.shape != "tiny" and not (Path(cfg.tokenizer) / "tokenizer.json").is_file():
        raise ConfigError(f"--shape {cfg.shape} needs --tokenizer, a directory with SmolLM2's tokenizer.json")
    precisions = list(cfg.precisions) or (["fp32", "bf16"] if torch.cuda.is_available() else ["fp32"])
    # each child is a one-process job of its own: no rendezvous inherited from a launcher or a caller
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    results = []
    for phase in cfg.phases:
        for precision in precisions:
            proc = subprocess.run([sys.executable, script, "one", *flags_of(cfg, StepConfig), "--phase", phase,
                                   "--precision", precision], stdout=subprocess.PIPE, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise StepFailed(f"{phase} {precision} failed (exit {proc.returncode})")
            results.append(json.loads(line[len("RESULT "):]))
            r = results[-1]
            print(f"[bench-gmllm] {phase} {precision}: {r['params'] / 1e6:.1f}M parameters, {r['tokens_per_s']:,.0f} "
                  f"tokens/s", flush=True)
    print(f"\nG-MLLM training throughput, shape {cfg.shape}, batch {cfg.batch_size}, on {results[0]['device']} "
          f"(x = against {precisions[0]})")
    show(results)
    report = {"shape": cfg.shape, "device": results[0]["device"], "baseline": precisions[0], "results": results}
    write_report(cfg.report, report)
    return report
