"""Throughput of G-MLLM pre-training and GRM training through the jobs' own engine and step
(training.engine.build_engine, training.loop.train_step): tokens per second, peak memory and model FLOPs
utilisation (MFU), per engine variant and batch size, side by side with a baseline variant (the first listed)
(jobs/bench_gmllm.py is its command line).

This module needs torch, DeepSpeed and transformers only, never Spark, Delta or petastorm: a GPU node runs
it on the two Parquet files that gmllm_export sampled from the warehouse on the data side.

Models (shape): `tiny`, the tiny profile (its tokenizer trained on the sampled rows); or the small
profile's architecture (MobileNetV2 tower + projector + a SmolLM2-shaped Llama) at one of
models.gmllm.SMOLLM2_SHAPES with random weights, read with SmolLM2's tokenizer from `tokenizer` (default:
the copy that the small profile caches on its first load; only tokenizer.json and tokenizer_config.json
are read, so a GPU node needs those two files and the exported rows, not the weights).

Variants (VARIANTS): `jobs`, the engine the training jobs build on this machine with the given engine flags
(on one GPU: no ZeRO, bf16 autocast over fp32 weights, fused AdamW, each transformer layer compiled); `model`,
the same with the whole model compiled as one graph (--compile-scope model); `graphs`, the layers compiled
with CUDA graphs (--compile-mode reduce-overhead); `eager`, the same not compiled; `zero2`, the jobs' engine before it was planned per machine (the JSON's ZeRO-2, DeepSpeed's bf16
optimizer, not compiled).

What is timed: `steps` training steps (training.loop.train_step: forward, backward, optimizer step) after
`warmup` steps (with compile, at least one step per distinct batch, so every batch shape is compiled before
the clock starts), on batches of the sampled rows encoded before the clock starts (tokenising and decoding
images are left out; in the jobs they run inside the step loop). Each (phase, batch size, variant) runs in a
fresh process, so peak memory is its own.
  tokens/s     positions the language model reads that are not padding (text, image patches, group token)
  FLOPs        counted by torch.utils.flop_counter over a full-precision forward and backward of each distinct
               batch, `flop_rows` rows at a time (each chunk padded to the batch's width, so the chunks add up
               to the whole batch's count with the memory of `flop_rows` rows); optimizer and activation
               recomputation excluded; averaged over the batches the timed steps run
  MFU          FLOPs per step / step time / the device's dense peak for the precision (peak_tflops overrides
               the table; none on a CPU)
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from osmf_core.data.config import ConfigError, default_warehouse
from osmf_core.data.flags import add_config_args
from osmf_core.data.reports import write_report
from osmf_core.evaluation.benchmarks.gmllm_step import (GRM_FILE, PRETRAIN_FILE, build, cached_flops, count_flops,
                                                        encode_rows, flop_key, peak_tflops, sampled_batches,
                                                        step_loss, write_profile)
from osmf_core.models.gmllm.builders import SMOLLM2_SHAPES, osmf_cache
from osmf_core.models.gmllm.grm import GRM
from osmf_core.models.gmllm.model import approx_tokens, pin_inputs
from osmf_core.training.engine import EngineConfig, build_engine
from osmf_core.training.loop import bucket_window, init_distributed, length_bucketed, train_step

PHASES = ("pretrain", "grm")
# engine variants: overrides of the jobs' EngineConfig
VARIANTS = {"jobs": {}, "model": {"compile_scope": "model"}, "eager": {"compile": False},
            "graphs": {"compile_mode": "reduce-overhead"},
            "zero2": {"zero_stage": 2, "compile": False}}
ROWS_DIR = "runs/bench_gmllm/rows"
PROFILED_STEPS = 3  # steps run under torch.profiler after the timed ones (--profile, --profile-dir)


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
    """What every timed (phase, batch size, variant) run shares."""
    rows: str = ROWS_DIR  # what export wrote
    shape: str = field(default="tiny", metadata={"choices": ("tiny", *SMOLLM2_SHAPES)})  # tiny, or a SmolLM2 shape (random weights)
    tokenizer: str = ""  # SmolLM2's tokenizer directory (SmolLM2 shapes; default: the small profile's cached copy)
    layers: int = 0  # a SmolLM2 shape's language-model layers (0: the shape's; fewer: a quick look on a CPU)
    deepspeed_config: str = "cluster/deepspeed/gmllm.json"  # DeepSpeed JSON (the jobs')
    engine: EngineConfig = field(default_factory=EngineConfig)
    batch_size: int = 16  # per step; a GRM step reads 2x rows (pairs)
    steps: int = 20  # timed engine steps
    warmup: int = 3  # engine steps before the clock starts
    distinct_batches: int = 8  # encoded batches the steps cycle over
    flop_rows: int = 4  # rows per full-precision forward and backward that counts FLOPs
    # JSON of FLOP counts by model, batches and rows: a run reads its count there, or counts and adds it (default:
    # one file for the bench's runs, so its variants count the same batches once)
    flop_cache: str = ""
    # pre-training: the distinct batches pooled and sorted by length, as the job does (0: off; default: on a
    # GPU, over every distinct batch up to the job's window)
    length_buckets: int | None = None
    peak_tflops: float = 0.0  # dense peak for MFU (0: from the table)
    seed: int = 0  # seed of the weights and of the batches


@dataclass
class BenchConfig(StepConfig):
    """The benchmark: every phase at every batch size in every variant, each in a fresh process."""
    phases: tuple[str, ...] = PHASES  # phases timed, in order
    variants: tuple[str, ...] = ("zero2", "jobs")  # engine variants (VARIANTS); the first is the baseline
    batch_sizes: tuple[int, ...] = ()  # batch sizes timed (default: --batch-size)
    run_timeout: int = 0  # seconds a run may take before it is stopped and reported as failed (0: no limit)
    report: str = "reports/bench_gmllm.json"  # where the report goes
    profile_dir: str = ""  # each run's profile of PROFILED_STEPS steps after its timed ones goes here (off: "")


@dataclass
class OneConfig(StepConfig):
    """One (phase, variant), timed in this process."""
    phase: str | None = field(default=None, metadata={"choices": PHASES})  # pretrain or grm (required)
    variant: str = field(default="jobs", metadata={"choices": tuple(VARIANTS)})  # engine variant
    profile: str = ""  # write torch.profiler's top operators of PROFILED_STEPS more steps here
    local_rank: int = 0  # set by the DeepSpeed launcher

    def __post_init__(self):
        if self.phase is None:
            raise ConfigError("one needs --phase")


class StepFailed(RuntimeError):
    """A (phase, batch size, variant) process failed."""


def add_args(ap, cls) -> None:
    """The flags of a StepConfig subclass: StepConfig's (with their comments), then its own."""
    add_config_args(ap, StepConfig)
    add_config_args(ap, cls, skip={f.name for f in dataclasses.fields(StepConfig)})


def flags_of(cfg, cls=None) -> list[str]:
    """The fields of `cfg` (those of dataclass `cls` if given; nested config dataclasses' too) as flags, for a
    child process. A bool is --x or --no-x; a None is left out (its default)."""
    out = []
    for f in dataclasses.fields(cls or cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += flags_of(v)
        elif isinstance(v, bool):
            out.append(f"--{f.name}" if v else f"--no-{f.name}")
        elif v is not None:
            out += [f"--{f.name}", ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)]
    return out


# ------------------------------------------------------------------------------ one (phase, batch size, variant)
def run_one(cfg: OneConfig) -> dict:
    """Build, count FLOPs, wrap in the jobs' engine (the variant's), warm up, time; the figures of one run.
    Each stage's start goes to stderr (`STAGE name seconds`), so a run stopped at its time limit says where."""
    t_start, started = time.perf_counter(), {}

    def stage(name: str) -> None:
        started[name] = round(time.perf_counter() - t_start, 1)
        print(f"STAGE {name} {started[name]:.0f}", file=sys.stderr, flush=True)

    stage("build")
    init_distributed()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    rows_dir = Path(cfg.rows)
    base = build(cfg.shape, rows_dir, cfg.tokenizer, cfg.seed, device if cuda else None, cfg.layers)
    model = base if cfg.phase == "pretrain" else GRM(base, use_group=True, pooling="bilinear")
    if cfg.phase == "grm":  # as train_grm: the vision tower stays frozen
        base.llava.model.vision_tower.requires_grad_(False)
    frames = sampled_batches(cfg.phase, rows_dir, cfg.batch_size, cfg.distinct_batches, cfg.seed)
    window = min(bucket_window(cfg.length_buckets), len(frames)) if cfg.phase == "pretrain" else 0
    if window:
        n_img = base.n_image_tokens
        lengths = lambda b: approx_tokens(b["instruction"], b["response"], n_img)  # noqa: E731
        frames = [pd.DataFrame(b) for b in length_bucketed(({c: f[c].to_numpy() for c in f} for f in frames),
                                                           lengths, window, cfg.seed)]
    batches = [pin_inputs(encode_rows(base, cfg.phase, b)) for b in frames]  # a step queues their copies
    model.to(device)
    stage("flops")
    # fp32 and before the engine: FLOPs do not depend on precision; the mean over the batches the timed steps
    # run (they cycle over the distinct batches)
    key = flop_key(cfg, rows_dir, window)
    per_batch, cached = cached_flops(cfg.flop_cache, key, lambda: [
        count_flops(model, base, cfg.phase, b, e["input_ids"].shape[1], cfg.flop_rows, device)
        for b, e in zip(frames, batches)])
    engine_cfg = dataclasses.replace(cfg.engine, **VARIANTS[cfg.variant])
    # compiled: every distinct batch before the clock starts; in CUDA graphs three times (torch's graph trees
    # run a new shape once, record it the second time and replay it from the third)
    compiled = engine_cfg.compile or (engine_cfg.compile is None and cuda)
    per_batch_warmup = 3 if compiled and engine_cfg.compile_mode == "reduce-overhead" else 1 if compiled else 0
    warmup = max(cfg.warmup, per_batch_warmup * len(batches))
    flops = sum(per_batch[i % len(batches)] for i in range(warmup, warmup + cfg.steps)) / cfg.steps
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    stage("engine")
    engine, plan = build_engine(model, trainable, cfg.deepspeed_config, cfg.batch_size, 1e-4, warmup + cfg.steps,
                                engine_cfg)
    stage("warmup (compiles)" if plan.compile else "warmup")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens = positions = 0
    t0, loss = None, None
    loss_of = lambda b: step_loss(engine, cfg.phase, b, engine.device)  # noqa: E731
    for i in range(warmup + cfg.steps):
        if i == warmup:
            sync()
            stage("timed steps")
            t0 = time.perf_counter()
        batch = batches[i % len(batches)]
        loss = train_step(engine, loss_of, batch)
        if i >= warmup:
            tokens += int(batch["attention_mask"].sum())
            positions += batch["attention_mask"].numel()
    sync()
    seconds = time.perf_counter() - t0
    if cfg.profile:  # after the clock: the figures are the unprofiled steps'
        stage("profiled steps")
        write_profile(cfg.profile, lambda i: train_step(engine, loss_of, batches[i % len(batches)]), PROFILED_STEPS,
                      sync, cuda)
    step_s = seconds / cfg.steps
    peak = peak_tflops(plan.precision, cfg.peak_tflops)
    achieved = flops / step_s
    out = {"phase": cfg.phase, "shape": cfg.shape, "layers": cfg.layers, "variant": cfg.variant,
           "engine": dataclasses.asdict(plan), "length_buckets": window,
           "precision": plan.precision, "device": str(torch.cuda.get_device_name() if cuda else "cpu"),
           "params": params, "trainable_params": sum(p.numel() for p in trainable), "batch_size": cfg.batch_size,
           "rows_per_step": len(batches[0]["input_ids"]), "warmup": warmup, "steps": cfg.steps, "step_s": step_s,
           "tokens_per_s": tokens / seconds, "positions_per_s": positions / seconds,
           "mean_tokens_per_row": tokens / cfg.steps / len(batches[0]["input_ids"]),
           "flops_per_step": flops, "flops_from": "cache" if cached else "counted", "achieved_tflops": achieved / 1e12,
           "peak_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
           "loss_last": float(loss.item()),
           "stages_started_s": {**started, "end": round(time.perf_counter() - t_start, 1)}}
    del model, base
    gc.collect()
    return out


def versions() -> dict:
    import deepspeed
    import transformers
    return {"torch": torch.__version__, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda}


# ------------------------------------------------------------------------------ the benchmark and its table
def show(results: list[dict]) -> None:
    """The table: one line per run, x = against the baseline variant's run of the same phase and batch size."""
    base = {(r["phase"], r["batch_size"]): r for r in reversed(results)
            if r["variant"] == results[0]["variant"] and "error" not in r}
    print(f"{'phase':<9} {'batch':>5} {'variant':<7} {'step s':>8} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>7} "
          f"{'peak GiB':>9} {'x tokens/s':>10} {'x memory':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['phase']:<9} {r['batch_size']:>5} {r['variant']:<7} failed: {r['error']}")
            continue
        b = base.get((r["phase"], r["batch_size"]))
        mem = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
        mem_x = f"{r['peak_memory_gib'] / b['peak_memory_gib']:.2f}" if b and r["peak_memory_gib"] else "n/a"
        speed_x = f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}" if b else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{r['phase']:<9} {r['batch_size']:>5} {r['variant']:<7} {r['step_s']:>8.4f} {r['tokens_per_s']:>11,.0f} "
              f"{r['achieved_tflops']:>8.2f} {mfu:>7} {mem:>9} {speed_x:>10} {mem_x:>9}")


def bench(cfg: BenchConfig, script: str) -> dict:
    """Every phase at every batch size in every variant, each a `script one ...` process of its own; prints the
    table, writes and returns the report. ConfigError when the rows or the tokenizer are missing; StepFailed,
    after the table and the report, when a run failed."""
    for name in (PRETRAIN_FILE, GRM_FILE):
        if not (Path(cfg.rows) / name).is_file():
            raise ConfigError(f"{Path(cfg.rows) / name} missing: run `python jobs/bench_gmllm.py export` first")
    if cfg.shape != "tiny" and not cfg.tokenizer:  # the copy the small profile keeps (models.gmllm.smollm2)
        cfg = dataclasses.replace(cfg, tokenizer=str(osmf_cache() / "smollm2-135m-instruct"))
    if cfg.shape != "tiny" and not (Path(cfg.tokenizer) / "tokenizer.json").is_file():
        raise ConfigError(f"--shape {cfg.shape} needs --tokenizer, a directory with SmolLM2's tokenizer.json")
    unknown = sorted(set(cfg.variants) - set(VARIANTS))
    if unknown or not cfg.variants:
        raise ConfigError(f"--variants: {unknown or 'none given'}; known: {', '.join(VARIANTS)}")
    # each child is a one-process job of its own: no rendezvous inherited from a launcher or a caller
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    results = []
    report = write_bench_report(cfg, results)  # rewritten after every run: a stopped bench keeps what it measured
    with tempfile.TemporaryDirectory() as tmp:  # the runs' FLOP counts, unless --flop-cache keeps them
        shared = cfg if cfg.flop_cache else dataclasses.replace(cfg, flop_cache=str(Path(tmp) / "flops.json"))
        for phase in cfg.phases:
            for batch_size in cfg.batch_sizes or (cfg.batch_size,):
                step = dataclasses.replace(shared, batch_size=batch_size)
                for variant in cfg.variants:
                    profile = f"{cfg.profile_dir}/{phase}_b{batch_size}_{variant}.txt" if cfg.profile_dir else ""
                    results.append(run_child(script, step, phase, variant, env, cfg.run_timeout, profile))
                    r = results[-1]
                    print(f"[bench-gmllm] {phase} batch {batch_size} {variant}: " + (
                        f"{r['params'] / 1e6:.1f}M parameters, {r['tokens_per_s']:,.0f} tokens/s" if "error" not in r
                        else f"failed ({r['error']})"), flush=True)
                    report = write_bench_report(cfg, results)
    done = [r for r in results if "error" not in r]
    print(f"\nG-MLLM training throughput, shape {cfg.shape}, on {done[0]['device'] if done else 'n/a'} "
          f"(x = against {cfg.variants[0]} at the same phase and batch size)")
    show(results)
    failed = [r for r in results if "error" in r]
    if failed:
        raise StepFailed(f"{len(failed)} of {len(results)} runs failed: " + "; ".join(
            f"{r['phase']} batch {r['batch_size']} {r['variant']} ({r['error']})" for r in failed))
    return report


def write_bench_report(cfg: BenchConfig, results: list[dict]) -> dict:
    done = [r for r in results if "error" not in r]
    report = {"shape": cfg.shape, "device": done[0]["device"] if done else None, "baseline": cfg.variants[0],
              "versions": versions(), "results": results}
    write_report(cfg.report, report)
    return report


def last_stage(stderr: str) -> str:
    """', in <stage> (from <s> s)' of the last STAGE line a run wrote, or ''."""
    stages = [ln.split() for ln in stderr.splitlines() if ln.startswith("STAGE ")]
    return f", in {' '.join(stages[-1][1:-1])} (from {stages[-1][-1]} s)" if stages else ""


def run_child(script: str, step: StepConfig, phase: str, variant: str, env: dict, timeout: int,
              profile: str = "") -> dict:
    """One `script one ...` process; its RESULT, or a row with the error (an out-of-memory run is a figure
    too: that batch does not fit)."""
    args = [sys.executable, script, "one", *flags_of(step, StepConfig), "--phase", phase, "--variant", variant,
            *(["--profile", profile] if profile else [])]
    row = {"phase": phase, "batch_size": step.batch_size, "variant": variant}
    try:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=timeout or None)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {**row, "error": f"stopped after {timeout} s{last_stage(err)}"}
    sys.stderr.write(proc.stderr[-3000:] if proc.returncode else "")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        oom = "OutOfMemoryError" in proc.stderr or "CUDA out of memory" in proc.stderr
        return {**row, "error": "out of memory" if oom else f"exit {proc.returncode}{last_stage(proc.stderr)}"}
    return json.loads(line[len("RESULT "):])
