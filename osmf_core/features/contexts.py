"""The prompt-generation contexts of a regroup run: one row per (product, group) with the instruction, the
teacher's response, the product image, mask and title and the group features. Group-DPO samples from them,
generation makes one image per row, the evaluation scores them."""
from __future__ import annotations

import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.data.reader import read_frame, run_of
from osmf_core.features.split import TEST, TRAIN, held_out_partition, training_partition

CONTEXT_TABLES = (C.PRODUCTS,)  # read with feat.instructions by load_contexts


def load_contexts(warehouse: str, run_date: str = "", split: str | None = None) -> pd.DataFrame:
    """One prompt-generation context per (product, group): the instruction, the teacher's response, the
    product image and mask, the title and the group features. `split` 'train' keeps the products training
    may see, 'test' the held-out ones (features.split); None both (generation makes images for all)."""
    run_date = run_of(C.INSTRUCTIONS, warehouse, run_date, needs=CONTEXT_TABLES)
    fields = ["task", "example", "product_id", "group_id", "instruction", "response", "image", "group_features"]
    part = {TRAIN: training_partition(run_date), TEST: held_out_partition(run_date), None: {"run_date": run_date}}
    if split not in part:
        raise ValueError(f"split must be train, test or None, got {split!r}")
    rows = read_frame(C.INSTRUCTIONS, warehouse, fields, part[split])
    rows = rows[(rows["task"] == "prompt_generation") & (rows["example"] == 0)].drop(columns=["task", "example"])
    prods = read_frame(C.PRODUCTS, warehouse, ["product_id", "title", "mask"])
    rows = rows.merge(prods, on="product_id")
    return rows.sort_values(["product_id", "group_id"]).reset_index(drop=True)
