"""Throughput of G-MLLM pre-training and GRM training under DeepSpeed: tokens per second, peak memory and
model FLOPs utilisation (MFU), per precision, side by side with a baseline precision (the first listed).

Two steps, so that a GPU node needs neither Spark nor the warehouse:
    python jobs/bench_gmllm.py export --out runs/bench_gmllm/rows     # sample rows of feat.instructions and
                                                                      # feat.grm_examples (petastorm) to Parquet
    python jobs/bench_gmllm.py run --rows runs/bench_gmllm/rows --shape smollm2-135m --batch-size 32
`make bench-gmllm` does both on this machine with the tiny profile.

Models (--shape): `tiny`, the tiny profile (its tokenizer trained on the sampled rows); or the small
profile's architecture (MobileNetV2 tower + projector + a SmolLM2-shaped Llama) at one of
models.gmllm.SMOLLM2_SHAPES with random weights, read with SmolLM2's tokenizer from --tokenizer (default:
the copy that the small profile caches on its first load; only tokenizer.json and tokenizer_config.json
are read, so a GPU node needs those two files and the exported rows, not the weights).

What is timed: --steps DeepSpeed engine steps (forward, backward, ZeRO-2 optimizer step, the config of
cluster/deepspeed/gmllm.json with bf16 switched by --precisions and torch's AdamW) after --warmup steps, on batches of the
sampled rows encoded before the clock starts (tokenising and decoding images are left out; in the jobs
they run inside the step loop). Each (phase, precision) runs in a fresh process, so peak memory is its own.
  tokens/s     positions the language model reads that are not padding (text, image patches, group token)
  FLOPs        counted by torch.utils.flop_counter over a forward and backward of each distinct batch
               (optimizer excluded), averaged over the batches the timed steps run
  MFU          FLOPs per step / step time / the device's dense peak for that precision (--peak-tflops
               overrides the table; none on a CPU)
Writes reports/bench_gmllm.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from osmf_core.models.gmllm.builders import SMOLLM2_SHAPES, build_small_shape, build_tiny, osmf_cache
from osmf_core.models.gmllm.grm import GRM
from osmf_core.models.gmllm.model import GMLLMConfig, encode
from osmf_core.models.gmllm.tokens import train_tokenizer
from osmf_core.data.reports import write_report

PHASES = ("pretrain", "grm")
# dense peak TFLOP/s by device name and precision (fp32 without TF32: torch's default for matmuls)
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 66.9}, "H200": {"bf16": 989.4, "fp32": 66.9},
               "A100": {"bf16": 312.0, "fp32": 19.5}}
PRETRAIN_FILE, GRM_FILE = "pretrain.parquet", "grm.parquet"
MAX_LEN = {"pretrain": 384, "grm": 128}  # tokens per row, PretrainConfig's and GRMConfig's defaults


# ------------------------------------------------------------------------------ export (needs the data stack)
def export(warehouse: str, out: str, rows: int, pairs: int, seed: int) -> dict:
    """A seeded sample of the latest feat.instructions run and of the latest feat.grm_examples train split
    (with each pair's GRM instruction written out) as two Parquet files."""
    import pandas as pd
    from osmf_core.data import catalog as C
    from osmf_core.models.gmllm.grm import grm_instruction
    from osmf_core.data.reader import run_of
    from osmf_core.data.reader import row_batches
    from osmf_core.training.gmllm import FIELDS as PRETRAIN_FIELDS
    from osmf_core.training.grm import FIELDS as GRM_FIELDS

    def sample(t, fields, part, n):
        batch = next(iter(row_batches(t, warehouse, fields, part, n, seed=seed, buffer_rows=4 * n)))
        return pd.DataFrame({k: list(v) for k, v in batch.items()})

    pre_run, grm_run = run_of(C.INSTRUCTIONS, warehouse), run_of(C.GRM_EXAMPLES, warehouse)  # both before any work
    pre = sample(C.INSTRUCTIONS, PRETRAIN_FIELDS, {"run_date": pre_run}, rows)
    grm = sample(C.GRM_EXAMPLES, GRM_FIELDS, {"run_date": grm_run, "split": "train"}, pairs)
    grm["instruction"] = [grm_instruction(t) for t in grm["title"]]
    Path(out).mkdir(parents=True, exist_ok=True)
    for frame, name in ((pre, PRETRAIN_FILE), (grm, GRM_FILE)):
        frame["group_features"] = [np.asarray(f, dtype=np.float32) for f in frame["group_features"]]
        frame.to_parquet(Path(out) / name, index=False)
    return {"pretrain_rows": len(pre), "grm_pairs": len(grm), "out": out}


# ------------------------------------------------------------------------------ one (phase, precision)
def build(shape: str, rows_dir: Path, tokenizer: str, seed: int):
    """The model of `shape`, its group token as wide as the rows' group features (PAAG's d times 1 + the
    percentile points)."""
    import pandas as pd
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
    from transformers import AutoTokenizer
    return build_small_shape(cfg, shape, AutoTokenizer.from_pretrained(tokenizer))


def encoded_batches(model, phase: str, rows_dir: Path, batch_size: int, max_len: int, n_batches: int,
                    seed: int) -> list[dict]:
    """`n_batches` batches of sampled rows as model inputs (CPU tensors). A GRM batch of B pairs is 2B
    one-image rows, as training/grm.pair_inputs builds them."""
    import pandas as pd
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


def run_one(args) -> dict:
    """Build, count FLOPs, wrap in a DeepSpeed engine, warm up, time; the figures of one (phase, precision)."""
    import deepspeed
    from torch.utils.flop_counter import FlopCounterMode
    from osmf_core.training.loop import ds_config, init_distributed
    init_distributed()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    rows_dir = Path(args.rows)
    base = build(args.shape, rows_dir, args.tokenizer, args.seed)
    model = base if args.phase == "pretrain" else GRM(base, use_group=True, pooling="bilinear")
    if args.phase == "grm":  # as train_grm: the vision tower stays frozen
        base.llava.model.vision_tower.requires_grad_(False)
    batches = encoded_batches(base, args.phase, rows_dir, args.batch_size, MAX_LEN[args.phase], args.distinct_batches,
                              args.seed)
    model.to(device)
    per_batch = []
    for batch in batches:  # fp32, before DeepSpeed: FLOPs do not depend on precision
        with FlopCounterMode(display=False) as counter:
            step_loss(model, args.phase, batch, device).backward()
        per_batch.append(counter.get_total_flops())
    model.zero_grad(set_to_none=True)
    # the mean over the batches the timed steps run (they cycle over the distinct batches)
    flops = sum(per_batch[i % len(batches)] for i in range(args.warmup, args.warmup + args.steps)) / args.steps
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    cfg = ds_config(args.deepspeed_config, args.batch_size, 1e-4, args.warmup + args.steps)
    cfg["bf16"] = {"enabled": args.precision == "bf16"}
    cfg["optimizer"]["params"]["torch_adam"] = True  # torch's AdamW on every device: no JIT-built kernel
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=trainable, config=cfg)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens = positions = 0
    t0, prof = None, None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            if args.profile:  # the timed steps under torch.profiler (slower: the figures are then its own)
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if cuda else []))
                prof.__enter__()
            t0 = time.perf_counter()
        batch = batches[i % len(batches)]
        loss = step_loss(engine, args.phase, batch, engine.device)
        engine.backward(loss)
        engine.step()
        if i >= args.warmup:
            tokens += int(batch["attention_mask"].sum())
            positions += batch["attention_mask"].numel()
    sync()
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
        Path(args.profile).write_text(prof.key_averages().table(sort_by=key, row_limit=25))
    step_s = seconds / args.steps
    peak = peak_tflops(args.precision, args.peak_tflops)
    achieved = flops / step_s
    out = {"phase": args.phase, "shape": args.shape, "precision": args.precision, "device": str(
        torch.cuda.get_device_name() if cuda else "cpu"), "params": params,
           "trainable_params": sum(p.numel() for p in trainable), "batch_size": args.batch_size,
           "rows_per_step": len(batches[0]["input_ids"]), "steps": args.steps, "step_s": step_s,
           "tokens_per_s": tokens / seconds, "positions_per_s": positions / seconds,
           "mean_tokens_per_row": tokens / args.steps / len(batches[0]["input_ids"]),
           "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
           "peak_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
           "loss_last": float(loss.item())}
    del engine, model, base
    gc.collect()
    return out


# ------------------------------------------------------------------------------ the table
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="sample rows from the warehouse to Parquet (needs the Spark stack)")
    ex.add_argument("--warehouse", default="")
    ex.add_argument("--out", default="runs/bench_gmllm/rows")
    ex.add_argument("--rows", type=int, default=1024, help="instruction rows")
    ex.add_argument("--pairs", type=int, default=512, help="GRM pairs")
    ex.add_argument("--seed", type=int, default=0)
    for name in ("run", "one"):
        p = sub.add_parser(name, help="the benchmark" if name == "run" else "one (phase, precision), as JSON")
        p.add_argument("--rows", default="runs/bench_gmllm/rows", help="what export wrote")
        p.add_argument("--shape", default="tiny", choices=["tiny", *SMOLLM2_SHAPES])
        p.add_argument("--tokenizer", default="", help="SmolLM2's tokenizer directory (SmolLM2 shapes; default: the small "
                       "profile's cached copy)")
        p.add_argument("--deepspeed_config", default="cluster/deepspeed/gmllm.json")
        p.add_argument("--batch-size", type=int, default=16, help="per step; a GRM step reads 2x rows (pairs)")
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--distinct-batches", type=int, default=8, help="encoded batches the steps cycle over")
        p.add_argument("--peak-tflops", type=float, default=0.0, help="dense peak for MFU (0: from the table)")
        p.add_argument("--seed", type=int, default=0)
    run = sub.choices["run"]
    run.add_argument("--phases", default=",".join(PHASES))
    run.add_argument("--precisions", default="", help="first = baseline (default: fp32,bf16 on a GPU, fp32 on a CPU)")
    run.add_argument("--report", default="reports/bench_gmllm.json")
    one = sub.choices["one"]
    one.add_argument("--phase", choices=PHASES, required=True)
    one.add_argument("--precision", choices=["fp32", "bf16"], required=True)
    one.add_argument("--profile", default="", help="write torch.profiler's top operators of the timed steps here")
    one.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)

    if args.cmd == "export":
        from osmf_core.data.config import ConfigError, config_error, default_warehouse
        try:
            print(json.dumps(export(args.warehouse or default_warehouse(), args.out, args.rows, args.pairs, args.seed)))
        except ConfigError as e:  # a table or run missing: one line, as every job
            return config_error("bench_gmllm", e)
        return 0
    if args.cmd == "one":
        print("RESULT " + json.dumps(run_one(args)))
        return 0
    for name in (PRETRAIN_FILE, GRM_FILE):
        if not (Path(args.rows) / name).is_file():
            print(f"bench_gmllm: {Path(args.rows) / name} missing: run `python jobs/bench_gmllm.py export` first",
                  file=sys.stderr)
            return 2
    if args.shape != "tiny" and not args.tokenizer:  # the copy the small profile keeps (models.gmllm.smollm2)
        args.tokenizer = str(osmf_cache() / "smollm2-135m-instruct")
    if args.shape != "tiny" and not (Path(args.tokenizer) / "tokenizer.json").is_file():
        print(f"bench_gmllm: --shape {args.shape} needs --tokenizer, a directory with SmolLM2's tokenizer.json",
              file=sys.stderr)
        return 2
    precisions = [p for p in (args.precisions or ("fp32,bf16" if torch.cuda.is_available() else "fp32")).split(",") if p]
    common = ["--rows", args.rows, "--shape", args.shape, "--tokenizer", args.tokenizer, "--deepspeed_config",
              args.deepspeed_config, "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
              str(args.warmup), "--distinct-batches", str(args.distinct_batches), "--peak-tflops",
              str(args.peak_tflops), "--seed", str(args.seed)]
    # each child is a one-process job of its own: no rendezvous inherited from a launcher or a caller
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    results = []
    for phase in [p for p in args.phases.split(",") if p]:
        for precision in precisions:
            proc = subprocess.run([sys.executable, __file__, "one", *common, "--phase", phase, "--precision", precision],
                                  stdout=subprocess.PIPE, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"bench_gmllm: {phase} {precision} failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            results.append(json.loads(line[len("RESULT "):]))
            r = results[-1]
            print(f"[bench-gmllm] {phase} {precision}: {r['params'] / 1e6:.1f}M parameters, {r['tokens_per_s']:,.0f} "
                  f"tokens/s", flush=True)
    print(f"\nG-MLLM training throughput, shape {args.shape}, batch {args.batch_size}, on {results[0]['device']} "
          f"(x = against {precisions[0]})")
    show(results)
    write_report(args.report, {"shape": args.shape, "device": results[0]["device"], "baseline": precisions[0],
                               "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
