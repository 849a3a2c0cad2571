"""The one-size reward model learns as CAIG's does: from pairs of a product's creatives ordered by their CTR
over the product's whole audience (feat.product_pairs), not from the groups' pairs with the group removed."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data.store import read_table
from osmf_core.training.gmllm import MODEL_SUBDIR
from osmf_core.training.grm import GRMConfig, train_grm

MIN_EXPOSURE, RATIO, WINDOW_DAYS = 10, 1.25, 3  # the instructions fixture's settings


def test_product_pairs_order_creatives_by_their_ctr_over_all_viewers(spark, instructions_wh):
    wh, summary = instructions_wh
    day = dt.date.fromisoformat(summary["run_date"])
    pp = (read_table(spark, C.PRODUCT_PAIRS, wh).where(F.col("run_date") == day)
          .select("product_id", "creative_a", "creative_b", "label", "group_id", "group_dim", "split").toPandas())
    imps = (read_table(spark, C.IMPRESSIONS, wh)
            .where(F.col("event_date").between(day - dt.timedelta(days=WINDOW_DAYS - 1), day))
            .join(read_table(spark, C.CREATIVES, wh).select("creative_id", "product_id"), "creative_id").toPandas())
    per = imps.groupby(["product_id", "creative_id"])["clicked"].agg(["size", "mean"]).reset_index()
    per = per[per["size"] >= MIN_EXPOSURE]
    want = {}
    for pid, cr in per.groupby("product_id"):
        rows = list(cr.itertuples())
        for a in rows:
            for b in rows:
                hi, lo = max(a.mean, b.mean), min(a.mean, b.mean)
                if a.creative_id < b.creative_id and hi > lo and hi >= RATIO * lo:
                    want[(pid, a.creative_id, b.creative_id)] = int(a.mean > b.mean)
    assert len(want) > 0
    assert dict(zip(zip(pp["product_id"], pp["creative_a"], pp["creative_b"]), pp["label"])) == want
    assert (pp["group_id"] == -1).all() and (pp["group_dim"] == 0).all()
    splits = {r["product_id"]: r["split"] for r in read_table(spark, C.INSTRUCTIONS, wh)
              .where(F.col("run_date") == day).select("product_id", "split").distinct().collect()}
    assert all(splits[p] == s for p, s in zip(pp["product_id"], pp["split"]))  # one split for every stream


def test_a_product_level_reward_model_reads_no_group():
    with pytest.raises(ValueError, match="--no-group"):
        GRMConfig(pairs="product")
    with pytest.raises(ValueError, match="pairs must be"):
        GRMConfig(use_group=False, pairs="creative")
    assert GRMConfig(use_group=False, pairs="product").pairs == "product"


def test_the_one_size_reward_model_trains_on_the_product_pairs_of_training_products(spark, tiny_models, tmp_path):
    wh, gm, _ = tiny_models
    out = train_grm(GRMConfig(warehouse=wh, gmllm=gm, use_group=False, pairs="product", max_steps=2, batch_size=4,
                              out_dir=str(tmp_path / "one_size"), progress=False))
    train = read_table(spark, C.PRODUCT_PAIRS, wh).where((F.col("run_date") == out["run_date"])
                                                         & (F.col("split") == "train")).count()
    assert out["rows"] == train > 0 and out["step"] == 2
    assert (tmp_path / "one_size" / MODEL_SUBDIR).is_dir()
