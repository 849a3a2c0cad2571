"""The rows that the G-MLLM benchmark (gmllm) times: a seeded sample of feat.instructions and
feat.grm_examples written to two Parquet files (jobs/bench_gmllm_export.py, or `jobs/bench_gmllm.py export`).

This side reads Delta through petastorm (osmf_core.data.reader), so it runs where the data stack is; the
timed run (gmllm) reads only the Parquet files and imports none of it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.data.reader import row_batches, run_of
from osmf_core.evaluation.benchmarks.gmllm import GRM_FILE, PRETRAIN_FILE, ExportConfig
from osmf_core.features.split import training_partition
from osmf_core.models.gmllm.grm import grm_instruction
from osmf_core.training.gmllm import FIELDS as PRETRAIN_FIELDS
from osmf_core.training.grm import FIELDS as GRM_FIELDS


def export(cfg: ExportConfig) -> dict:
    """A seeded sample of the latest feat.instructions run and of the latest feat.grm_examples train split
    (with each pair's GRM instruction written out) as two Parquet files."""

    def sample(t, fields, part, n):
        batch = next(iter(row_batches(t, cfg.warehouse, fields, part, n, seed=cfg.seed, buffer_rows=4 * n)))
        return pd.DataFrame({k: list(v) for k, v in batch.items()})

    # both runs before any work: a missing table stops the export before it writes anything
    pre_run, grm_run = run_of(C.INSTRUCTIONS, cfg.warehouse), run_of(C.GRM_EXAMPLES, cfg.warehouse)
    pre = sample(C.INSTRUCTIONS, PRETRAIN_FIELDS, training_partition(pre_run), cfg.rows)
    grm = sample(C.GRM_EXAMPLES, GRM_FIELDS, training_partition(grm_run), cfg.pairs)
    grm["instruction"] = [grm_instruction(t) for t in grm["title"]]
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    for frame, name in ((pre, PRETRAIN_FILE), (grm, GRM_FILE)):
        frame["group_features"] = [np.asarray(f, dtype=np.float32) for f in frame["group_features"]]
        frame.to_parquet(Path(cfg.out) / name, index=False)
    return {"pretrain_rows": len(pre), "grm_pairs": len(grm), "out": cfg.out}
