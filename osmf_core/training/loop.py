"""What every DeepSpeed training job here shares: the process group, checkpoints that survive a kill,
and the epoch loop with resume and a progress bar.

One process with gloo on CPU by default; under the DeepSpeed launcher on a GPU node, one per GPU.
A checkpoint every `save_every` steps holds the engine, the optimizer, the LR schedule, the data position
and the RNG state, so a killed run started again resumes where it left off.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from osmf_core.data.config import config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser

CHECKPOINTS = "checkpoints"
READ_EVERY = 10  # steps between reading the losses back from a GPU
LENGTH_BUCKETS = 16  # batches pooled and sorted by length on a GPU (length_bucketed)


def init_distributed() -> tuple[int, int]:
    """(rank, world size). Without a launcher this is a single process with gloo."""
    import deepspeed
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def usable_checkpoint(ckpt: Path, name: str = "paag", log=lambda m: print(m, file=sys.stderr)) -> str | None:
    """Tag of the newest complete checkpoint at or before the one `latest` names (DeepSpeed writes `latest`
    after a whole save). A checkpoint with a file that does not load (truncated, corrupt) or without
    model states is reported in one line and skipped; None when nothing usable is left."""
    latest = ckpt / "latest"
    if not latest.exists():
        return None
    step_of = lambda d: int(d.name[4:]) if d.name[4:].isdigit() else -1  # noqa: E731  (tags are stepN)
    newest = step_of(ckpt / latest.read_text().strip())
    for d in sorted((d for d in ckpt.glob("step*") if d.is_dir()), key=step_of, reverse=True):
        if step_of(d) > newest:
            log(f"[{name}] skipping checkpoint {d.name}: newer than `latest`, its save did not finish")
            continue
        files = sorted(d.glob("*.pt"))
        problem = None if any(f.name.endswith("model_states.pt") for f in files) else "no model states file"
        for f in files if problem is None else []:
            try:
                torch.load(f, map_location="cpu", weights_only=False, mmap=True)
            except Exception as e:  # noqa: BLE001  (any unreadable file disqualifies the checkpoint)
                problem = f"{f.name} does not load ({type(e).__name__}: {str(e)[:80]})"
                break
        if problem is None:
            return d.name
        log(f"[{name}] skipping checkpoint {d.name}: {problem}")
    log(f"[{name}] no usable checkpoint in {ckpt}: starting from scratch")
    return None


def ds_config(path: str, batch_size: int, lr: float, total_steps: int | None = None,
              warmup_share: float = 0.05) -> dict:
    """The DeepSpeed JSON with this run's micro-batch and learning rate; a WarmupCosineLR schedule in it
    gets this run's step count."""
    ds = json.loads(Path(path).read_text())
    ds["train_micro_batch_size_per_gpu"] = batch_size
    ds.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"]["lr"] = lr
    sched = ds.get("scheduler")
    if sched is not None and total_steps:
        if sched.get("type") != "WarmupCosineLR":
            raise ValueError(f"{path}: only a WarmupCosineLR scheduler is sized per run, got {sched.get('type')}")
        sched["params"]["total_num_steps"] = max(total_steps, 2)
        sched["params"]["warmup_num_steps"] = max(1, int(warmup_share * total_steps))
    return ds


def length_bucketed(batches: Iterable[dict], lengths: Callable[[dict], np.ndarray], window: int,
                    seed: int) -> Iterator[dict]:
    """The rows of every `window` consecutive batches sorted by `lengths(batch)` (one number per row) and cut
    back into batches of the same size, yielded in a seeded order: a batch then pads to rows of about its own
    length, not to the longest row of a random draw. Every row still comes exactly once, and the order is a
    function of the input and the seed (a resumed epoch skips the same batches)."""
    rng, pool = np.random.default_rng(seed), []

    def flush():
        cols = {k: np.concatenate([b[k] for b in pool]) for k in pool[0]}
        size = len(next(iter(pool[0].values())))
        order = np.argsort(np.concatenate([lengths(b) for b in pool]), kind="stable")
        chunks = [order[lo:lo + size] for lo in range(0, len(order), size)]
        pool.clear()
        for j in rng.permutation(len(chunks)):
            yield {k: v[chunks[j]] for k, v in cols.items()}

    for batch in batches:
        pool.append(batch)
        if len(pool) == window:
            yield from flush()
    if pool:
        yield from flush()


def bucket_window(length_buckets: int | None) -> int:
    """The window of length_bucketed a job uses: as given, else LENGTH_BUCKETS on a GPU and 0 (off: batches as
    drawn, as before) on a CPU."""
    if length_buckets is not None:
        return length_buckets
    return LENGTH_BUCKETS if torch.cuda.is_available() else 0


def train_step(engine, loss_of: Callable, batch) -> torch.Tensor:
    """The one training step of every job (and of bench-gmllm): forward and loss through the engine, backward,
    optimizer step. Returns the loss, not read back (reading it waits for the GPU). On a GPU each step first
    tells torch.compile's CUDA graphs (--compile-mode reduce-overhead) that a new step begins, so the graphs may
    reuse the memory of the last step's outputs (the loss returned is a copy, read after later steps)."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.compiler.cudagraph_mark_step_begin()
    loss = loss_of(batch)
    engine.backward(loss)
    engine.step()
    return loss.detach().clone() if cuda else loss.detach()


def fit(engine, batches: Callable[[int], Iterable], loss_of: Callable, *, epochs: int, out_dir: str,
        save_every: int, name: str, max_steps: int = 0, progress: bool = True, rank: int = 0,
        stop_after: int | None = None) -> dict:
    """Run (or resume) `epochs` passes: `batches(epoch)` yields the epoch's batches in a fixed order (so a
    resumed epoch skips exactly the batches it had done), `loss_of(batch)` returns the loss tensor.
    `stop_after` ends abruptly after that many steps of this process, without a checkpoint, as a kill
    would (for tests). Returns {step, resumed_from, stopped, loss, losses}. On a GPU the losses are read
    back every READ_EVERY steps, so the CPU queues the next steps while the GPU runs."""
    ckpt = Path(out_dir) / CHECKPOINTS
    step = epoch = skip = start = 0
    tag = usable_checkpoint(ckpt, name=name)
    if tag is not None:
        _, client = engine.load_checkpoint(str(ckpt), tag=tag)
        step, epoch, skip = client["step"], client["epoch"], client["batch_in_epoch"]
        torch.set_rng_state(client["torch_rng"])
        start = step
    bar = tqdm(desc=name, initial=step, disable=not progress or rank != 0, unit="step",
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    read_every = READ_EVERY if engine.device.type == "cuda" else 1
    smooth, losses, pending, done = None, [], [], False

    def read_back():
        nonlocal smooth
        if not pending:
            return
        for value in torch.stack(pending).float().tolist():
            losses.append(value)
            smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        bar.update(len(pending))
        bar.set_postfix(epoch=epoch, loss=f"{smooth:.4f}")
        pending.clear()

    while epoch < epochs and not done:
        engine.train()
        for k, batch in enumerate(batches(epoch)):
            if k < skip:
                continue
            pending.append(train_step(engine, loss_of, batch))
            step += 1
            if len(pending) >= read_every:
                read_back()
            if stop_after is not None and step - start >= stop_after:
                read_back()
                bar.close()
                return {"step": step, "resumed_from": start, "stopped": True, "loss": smooth, "losses": losses}
            if step % save_every == 0:
                engine.save_checkpoint(str(ckpt), tag=f"step{step}", client_state={
                    "step": step, "epoch": epoch, "batch_in_epoch": k + 1, "torch_rng": torch.get_rng_state()})
            if max_steps and step >= max_steps:
                done = True
                break
        else:
            epoch, skip = epoch + 1, 0
    read_back()
    bar.close()
    return {"step": step, "resumed_from": start, "stopped": False, "loss": smooth, "losses": losses}


def training_job(name: str, doc: str | None, config_cls, train: Callable, argv=None,
                 prepare: Callable | None = None) -> int:
    """A whole training job's main: flags from `config_cls` (osmf_core.data.flags) and the launcher's
    --local_rank; `prepare(cfg) -> cfg` checks the inputs (a ValueError is the job's one-line error, exit 2,
    before any work); then `train(cfg)`."""
    ap = job_parser(doc)
    add_config_args(ap, config_cls)
    ap.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher")
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(config_cls, args)
        cfg = prepare(cfg) if prepare is not None else cfg
    except ValueError as e:
        return config_error(name, e)
    train(cfg)
    return 0
