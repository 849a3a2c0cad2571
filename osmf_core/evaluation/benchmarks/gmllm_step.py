"""The pieces of one timed G-MLLM benchmark run (gmllm.run_one): the model of a shape, seeded batches of the
exported rows, their FLOPs counted in chunks, the loss of a step, the device's peak and a profile of steps.

Needs torch and transformers only (a GPU node has neither Spark nor the warehouse).
"""
from __future__ import annotations

import collections
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from osmf_core.models.gmllm.builders import build_small_shape, build_tiny
from osmf_core.models.gmllm.model import GMLLMConfig, encode, to_device
from osmf_core.models.gmllm.tokens import train_tokenizer

# dense peak TFLOP/s by device name and precision (fp32 without TF32: torch's default for matmuls)
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 66.9}, "H200": {"bf16": 989.4, "fp32": 66.9},
               "A100": {"bf16": 312.0, "fp32": 19.5}}
PRETRAIN_FILE, GRM_FILE = "pretrain.parquet", "grm.parquet"
MAX_LEN = {"pretrain": 384, "grm": 128}  # tokens per row, PretrainConfig's and GRMConfig's defaults


def build(shape: str, rows_dir: Path, tokenizer: str, seed: int, device=None, layers: int = 0):
    """The model of `shape` (a SmolLM2 shape with `layers` language-model layers if not 0), its group token as
    wide as the rows' group features (PAAG's d times 1 + the percentile points). A SmolLM2 shape is initialised
    on `device` when given (a GPU draws 1.7B random weights in a moment; a CPU takes a minute), and on the CPU
    if that fails."""
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
    if device is not None:
        try:
            with torch.device(device):
                return build_small_shape(cfg, shape, AutoTokenizer.from_pretrained(tokenizer), layers=layers)
        except Exception as e:  # noqa: BLE001  (any failure there: the CPU builds it as before)
            print(f"[bench-gmllm] building on {device} failed ({type(e).__name__}: {e}); building on the CPU",
                  file=sys.stderr)
            torch.manual_seed(seed)
    return build_small_shape(cfg, shape, AutoTokenizer.from_pretrained(tokenizer), layers=layers)


def sampled_batches(phase: str, rows_dir: Path, batch_size: int, n_batches: int, seed: int) -> list[pd.DataFrame]:
    """`n_batches` seeded samples of `batch_size` rows (pairs for the GRM) of the exported file."""
    frame = pd.read_parquet(rows_dir / (PRETRAIN_FILE if phase == "pretrain" else GRM_FILE))
    rng = np.random.default_rng(seed)
    return [frame.iloc[rng.choice(len(frame), batch_size, replace=len(frame) < batch_size)] for _ in range(n_batches)]


def encode_rows(model, phase: str, b: pd.DataFrame, pad_to: int = 0) -> dict:
    """Model inputs (CPU tensors) of sampled rows, at least `pad_to` positions wide. A GRM batch of B pairs is
    2B one-image rows, as training/grm.pair_inputs builds them."""
    if phase == "pretrain":
        return encode(model, list(b["instruction"]), list(b["response"]), MAX_LEN[phase], images=list(b["image"]),
                      group_features=list(b["group_features"]), pad_to=pad_to)
    enc = encode(model, list(b["instruction"]) * 2, None, MAX_LEN[phase], True, list(b["image_a"]) + list(b["image_b"]),
                 list(b["group_features"]) * 2, pad_to=pad_to)
    enc["label"] = torch.from_numpy(b["label"].to_numpy().astype(np.int64))
    return enc


def count_flops(model, base, phase: str, b: pd.DataFrame, width: int, chunk: int, device) -> int:
    """FLOPs of a full-precision forward and backward of `model` (`base`: its G-MLLM, which encodes) on the
    batch `b` (inputs `width` positions wide), counted
    `chunk` rows (pairs) at a time, each chunk padded to the batch's width: every operation counted is per
    row (per image), so the chunks add up to the whole batch's count, with the memory of one chunk."""
    total = 0
    for lo in range(0, len(b), chunk):
        with FlopCounterMode(display=False) as counter:
            step_loss(model, phase, encode_rows(base, phase, b.iloc[lo:lo + chunk], pad_to=width), device).backward()
        total += counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return total


def flop_key(cfg, rows_dir: Path, window: int) -> str:
    """What a run's FLOP count depends on: the model's shape and depth, the phase, the batches (their size,
    number, seed, length bucketing and width), the exported rows and the tokenizer (each file's size and
    modification time), and torch (its FLOP formulas); not the variant, the precision or flop_rows (chunks add
    up to the whole batch's count)."""
    paths = [rows_dir / PRETRAIN_FILE, rows_dir / GRM_FILE]
    if cfg.tokenizer:
        paths += [Path(cfg.tokenizer) / n for n in ("tokenizer.json", "tokenizer_config.json")]
    files = {str(f.resolve()): [f.stat().st_size, f.stat().st_mtime_ns] for f in paths if f.is_file()}
    return json.dumps({"shape": cfg.shape, "layers": cfg.layers, "phase": cfg.phase, "batch_size": cfg.batch_size,
                       "seed": cfg.seed, "distinct_batches": cfg.distinct_batches, "length_buckets": window,
                       "max_len": MAX_LEN[cfg.phase],
                       "files": files, "torch": torch.__version__}, sort_keys=True)


def cached_flops(path: str, key: str, count) -> tuple[list[int], bool]:
    """(FLOPs per distinct batch, whether they were read from `path`): `key`'s counts in the JSON file at `path`,
    else count()'s, added to the file (written whole, then renamed); without a path, count()'s."""
    if not path:
        return count(), False
    file = Path(path)
    known = json.loads(file.read_text()) if file.is_file() else {}
    if key in known:
        return known[key], True
    known[key] = got = count()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(file)
    return got, False


def step_loss(module, phase: str, batch: dict, device) -> torch.Tensor:
    inputs = to_device(batch, device)  # as the jobs' encode moves them
    label = inputs.pop("label", None)
    if phase == "pretrain":
        return module(**inputs).loss
    return torch.nn.functional.cross_entropy(module(**inputs).float(), label)


def peak_tflops(precision: str, override: float) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((p[precision] for k, p in PEAK_TFLOPS.items() if k in name), None)


def write_profile(path: str, step, n: int, sync, cuda: bool) -> None:
    """`n` calls of step(i) under torch.profiler: to `path`, their wall time and the device's busy time per step
    (the kernels' own time summed: a busy share well under 1 means the device waited for the CPU), then the
    operators by their own device (CPU) time, and on a GPU by their own CPU time too."""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    sync()
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(n):
            step(i)
        sync()
        wall = (time.perf_counter() - t0) / n
    try:  # a diagnostic: its failure must not cost the run its figures
        reads = device_reads(step, n, sync) if cuda else {}
    except Exception as e:  # noqa: BLE001
        reads = {f"(not read: {type(e).__name__}: {e})": 0}
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    # on a GPU the device's own events (kernels, copies; an operator's device time repeats its kernels')
    mine = [e for e in events if not cuda or e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(getattr(e, key) for e in mine) / 1e6 / n
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"{n} profiled steps: wall {wall * 1e3:.1f} ms a step, "
                          f"{'device' if cuda else 'CPU'} busy {busy * 1e3:.1f} ms a step ({busy / wall:.0%})\n"
                          + events.table(sort_by=key, row_limit=30) + "\n"
                          + ("by the CPU's own time (what launches the device's work)\n"
                             + events.table(sort_by="self_cpu_time_total", row_limit=20) + "\n"
                             + f"where the CPU waited for the device in {n} more steps (torch's sync debug mode)\n"
                             + "".join(f"{c:>6}  {w}\n" for w, c in reads.items()) if cuda else ""))


def device_reads(step, n: int, sync) -> dict:
    """{'file:line: message': count} of the synchronising CUDA calls of `n` calls of step(i), as torch's sync
    debug mode reports them: each is a wait of the CPU for the device (a read of a GPU tensor, a copy from
    pageable memory), after which the device idles until the CPU has queued work again."""
    seen = collections.Counter()
    sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(n):
                step(i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            seen[f"{w.filename}:{w.lineno}: {str(w.message)[:80]}"] += 1
    sync()
    return dict(seen.most_common())
