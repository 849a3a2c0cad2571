"""PAAG inputs in Spark: frozen-encoder features per product and creative, and the training rows.

Encoders run inside Spark tasks (loaded once per task, batched); their outputs go to Delta tables so
that training reads small rows and never runs an encoder.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.reader import require_tables
from osmf_core.data.store import exists_in, read_table, write_table
from osmf_core.features.split import held_out_from
from osmf_core.models.encoders import ImageEncoder, TextEncoder
from osmf_core.world.images import from_png


@dataclass
class FeatureConfig:
    image_encoder: str = "mobilenet_v2"  # mobilenet_v2 (ImageNet weights), tiny, or hf:/local/folder
    text_encoder: str = "minilm"  # minilm (all-MiniLM-L6-v2), tiny, or hf:/local/folder
    encode_batch: int = 64  # images or titles per encoder call
    test_days: int = 2  # the last days of the window are held out for evaluation
    example_files: int = 8  # files of the examples table (rows spread at random, for shuffled reading)
    seed: int = 0

    def __post_init__(self):
        if self.test_days < 1:
            raise ValueError("test_days must be >= 1: evaluation needs held-out days")
        if self.encode_batch < 1 or self.example_files < 1:
            raise ValueError("encode_batch and example_files must be >= 1")


def _chunks(frames, batch: int):
    """The rows of mapInPandas' input frames in slices of at most `batch` rows (one encoder call each)."""
    for pdf in frames:
        for lo in range(0, len(pdf), batch):
            yield pdf.iloc[lo:lo + batch]


def encode_titles(products: DataFrame, encoder: str, batch: int = 64) -> DataFrame:
    """feat.title_tokens rows: the token features of every product title."""
    def run(frames):
        enc = TextEncoder(encoder)
        for part in _chunks(frames, batch):
            feats, mask = enc(part["title"].tolist())
            # padded to max_tokens: fixed-length rows, as petastorm's batch reader requires
            padded = np.zeros((len(part), enc.max_tokens, feats.shape[2]), dtype=np.float32)
            padded[:, :feats.shape[1]] = feats * mask[..., None]
            rows = [(int(pid), encoder, int(m.sum()), feats.shape[2], f.ravel())
                    for pid, f, m in zip(part["product_id"], padded, mask)]
            yield pd.DataFrame(rows, columns=C.TITLE_TOKENS.column_names)

    return products.select("product_id", "title").mapInPandas(run, C.TITLE_TOKENS.schema)


def encode_images(creatives: DataFrame, encoder: str, batch: int = 64) -> DataFrame:
    """feat.image_patches rows: the patch features of every creative image."""
    def run(frames):
        enc = ImageEncoder(encoder)
        for part in _chunks(frames, batch):
            feats = enc(np.stack([from_png(b)[..., :3] for b in part["image"]]))
            rows = [(int(cid), encoder, feats.shape[1], feats.shape[2], f.ravel())
                    for cid, f in zip(part["creative_id"], feats)]
            yield pd.DataFrame(rows, columns=C.IMAGE_PATCHES.column_names)

    return creatives.select("creative_id", "image").mapInPandas(run, C.IMAGE_PATCHES.schema)


def paag_examples(impressions: DataFrame, users: DataFrame, creatives: DataFrame, test_from: dt.date,
                  files: int, seed: int) -> DataFrame:
    """feat.paag_examples rows: each impression with its product and the viewer's attributes."""
    rows = (impressions.join(creatives.select("creative_id", "product_id"), "creative_id")
            .join(users, "user_id")
            .withColumn("split", F.when(F.col("event_date") >= F.lit(test_from), "test").otherwise("train")))
    return rows.select(*C.PAAG_EXAMPLES.column_names).repartition(files, F.rand(seed))


NEEDED = (C.PRODUCTS, C.CREATIVES, C.IMPRESSIONS, C.USERS)


def build_features(spark: SparkSession, cfg: FeatureConfig, warehouse: str, log=print) -> dict:
    """Write feat.title_tokens, feat.image_patches and feat.paag_examples; return row counts."""
    require_tables(NEEDED, warehouse, exists_in(spark, warehouse))
    products = read_table(spark, C.PRODUCTS, warehouse)
    creatives = read_table(spark, C.CREATIVES, warehouse)
    write_table(encode_titles(products, cfg.text_encoder, cfg.encode_batch), C.TITLE_TOKENS, warehouse)
    log(f"[features] title tokens of {products.count()} products ({cfg.text_encoder})")
    write_table(encode_images(creatives, cfg.image_encoder, cfg.encode_batch), C.IMAGE_PATCHES, warehouse)
    log(f"[features] image patches of {creatives.count()} creatives ({cfg.image_encoder})")
    impressions = read_table(spark, C.IMPRESSIONS, warehouse)
    first, last = impressions.agg(F.min("event_date"), F.max("event_date")).first()
    if last is None:
        raise ConfigError("raw.impressions is empty: simulate or ingest logs first")
    test_from = held_out_from(last, cfg.test_days)
    if first >= test_from:
        raise ConfigError(f"the log window {first}..{last} leaves no training day when the last "
                         f"{cfg.test_days} are held out: simulate more days or lower test_days")
    examples = paag_examples(impressions, read_table(spark, C.USERS, warehouse), creatives, test_from,
                             cfg.example_files, cfg.seed)
    write_table(examples, C.PAAG_EXAMPLES, warehouse)
    counts = {r["split"]: r["count"] for r in
              read_table(spark, C.PAAG_EXAMPLES, warehouse).groupBy("split").count().collect()}
    log(f"[features] examples: {counts} (test from {test_from})")
    return counts
