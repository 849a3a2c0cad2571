"""The prompt-generation contexts of a regroup run: one row per (product, group) with the instruction, the
teacher's response, the product image, mask and title and the group features. Group-DPO samples from them,
generation makes one image per row, the evaluation scores them."""
from __future__ import annotations

import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.data.reader import read_columns, read_frame, run_of

CONTEXT_TABLES = (C.PRODUCTS, C.GRM_EXAMPLES)  # read with feat.instructions by load_contexts


def load_contexts(warehouse: str, run_date: str = "", split: str | None = None) -> pd.DataFrame:
    """One prompt-generation context per (product, group): the instruction, the teacher's response, the
    product image and mask, the title and the group features. `split` 'train'/'test' keeps the GRM's train or held-out products."""
    run_date = run_of(C.INSTRUCTIONS, warehouse, run_date, needs=CONTEXT_TABLES)
    fields = ["task", "example", "product_id", "group_id", "instruction", "response", "image", "group_features"]
    rows = read_frame(C.INSTRUCTIONS, warehouse, fields, {"run_date": run_date})
    rows = rows[(rows["task"] == "prompt_generation") & (rows["example"] == 0)].drop(columns=["task", "example"])
    prods = read_frame(C.PRODUCTS, warehouse, ["product_id", "title", "mask"])
    rows = rows.merge(prods, on="product_id")
    if split is not None:
        held = set()
        for g in read_columns(C.GRM_EXAMPLES, warehouse, ["product_id"], {"run_date": run_date, "split": "test"}):
            held.update(g["product_id"].tolist())
        rows = rows[rows["product_id"].isin(held) == (split == "test")]
    return rows.sort_values(["product_id", "group_id"]).reset_index(drop=True)
