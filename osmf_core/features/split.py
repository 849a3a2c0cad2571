"""The one train/test split of a regroup run's products: which products are held out of every training
stream (G-MLLM pre-training rows, the GRM's pairs, Group-DPO's contexts) and kept for evaluation (the GRM's
held-out Pair Accuracy, the simulated A/B of Table 3).

A product is held out when a seeded hash of its id falls below `test_share`; the instruction build writes
the result as the `split` partition of feat.instructions and feat.grm_examples, and every reader of a
training stream asks for `training_partition(run_date)`, so no held-out product, none of its creatives and
none of its groups reaches a model before it is evaluated. (PAAG's split is by days: the last `test_days`
of the window, `held_out_from`.)
"""
from __future__ import annotations

import datetime as dt

TRAIN, TEST = "train", "test"
BUCKETS = 1000  # test_share is resolved to 1/1000


def split_of(product_id, test_share: float, seed: int):
    """'test' for a held-out product, else 'train' (a Spark column of `product_id`): the same answer for a
    product in every table of a run. Spark is imported here only: the training streams read this module on
    nodes without it."""
    from pyspark.sql import functions as F
    held_out = F.pmod(F.xxhash64(product_id, F.lit(seed)), F.lit(BUCKETS)) < F.lit(int(test_share * BUCKETS))
    return F.when(held_out, F.lit(TEST)).otherwise(F.lit(TRAIN))


def training_partition(run_date: str) -> dict:
    """The partition of feat.instructions or feat.grm_examples that a training stream reads."""
    return {"run_date": str(run_date), "split": TRAIN}


def held_out_partition(run_date: str) -> dict:
    """The partition the evaluation reads: the held-out products' rows."""
    return {"run_date": str(run_date), "split": TEST}


def held_out_from(last_day: dt.date, test_days: int) -> dt.date:
    """PAAG's first held-out day: the last `test_days` days of the log window are evaluated, not trained on."""
    return last_day - dt.timedelta(days=test_days - 1)
