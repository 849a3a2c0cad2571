"""The simulated ad world in Spark: generate the raw tables block by block and load them.

Every Spark task generates whole blocks (osmf_core.world.model), so the tables depend on the seed and the
sizes only, never on the number of partitions or executors.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data import ingest
from osmf_core.data.store import read_table
from osmf_core.world import images, styles
from osmf_core.world import model as world
from osmf_core.world.model import WorldSize, WorldSpec
from osmf_core.world.params import WorldParams
from osmf_core.world.truth import MANIFEST


@dataclass
class SimulateConfig:
    # the world
    seed: int = 7  # same seed, same tables
    size: WorldSize = field(default_factory=WorldSize)  # users, products, impressions, days, images
    params: WorldParams = field(default_factory=WorldParams)  # preset, style scale, taste noise, popularity
    # execution
    partitions: int = 0  # Spark partitions for generation; 0 = one per block, capped at 4 x cores
    # bad input, to exercise the quarantine path of the loader
    corrupt_fraction: float = 0.0  # extra broken rows, as a fraction of users and impressions

    def __post_init__(self):
        if not 0.0 <= self.corrupt_fraction <= 0.5:
            raise ValueError(f"corrupt_fraction must be in [0, 0.5], got {self.corrupt_fraction}")
        if self.partitions < 0:
            raise ValueError("partitions must be >= 0")

    @property
    def run_date(self) -> dt.date:
        """The load's run date: the last day of the log window."""
        return dt.date.fromisoformat(self.size.start_date) + dt.timedelta(days=self.size.days - 1)


def _parts(spark: SparkSession, blocks: int, wanted: int) -> int:
    cap = 4 * spark.sparkContext.defaultParallelism
    return max(1, min(blocks, wanted or cap))


def users_df(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    seed, n = cfg.seed, cfg.size.users
    blocks = world.n_user_blocks(n)

    def gen(batches):
        for pdf in batches:
            for b in pdf["id"]:
                cols = world.sample_users(seed, int(b), n)
                yield pd.DataFrame({k: v.astype(np.int64 if k == "user_id" else np.int32)
                                    for k, v in cols.items()})

    return spark.range(blocks, numPartitions=_parts(spark, blocks, cfg.partitions)).mapInPandas(
        gen, C.USERS.schema)


def _product_rows(seed: int, block: int, size: WorldSize):
    """(products, creatives) pandas frames of one product block, images drawn."""
    p = world.sample_products(seed, block, size.products)
    n_px = size.image_size
    prod, crea = [], []
    for i, pid in enumerate(p["product_id"]):
        rgb, mask = images.product_cutout(int(p["category"][i]), int(p["color"][i]), n_px)
        title = world.product_title(int(p["category"][i]), int(p["brand"][i]), int(p["adj"][i]),
                                    int(p["model"][i]))
        prod.append((int(pid), world.CATEGORY_NAMES[p["category"][i]], title,
                     images.to_png(rgb * mask[..., None]), images.to_png(mask * 255)))
        for j in range(int(p["n_creatives"][i])):
            cid = int(pid) * world.CREATIVE_STRIDE + j
            style = p["styles"][i, j]
            bg = images.background(style, n_px, np.random.default_rng([seed, 5, cid]))
            crea.append((cid, int(pid), styles.style_prompt(style, title),
                         images.to_png(images.composite(bg, rgb, mask))))
    return (pd.DataFrame(prod, columns=C.PRODUCTS.column_names),
            pd.DataFrame(crea, columns=C.CREATIVES.column_names))


def products_df(spark: SparkSession, cfg: SimulateConfig) -> tuple[DataFrame, DataFrame]:
    seed, size = cfg.seed, cfg.size
    blocks = world.n_product_blocks(size.products)
    ids = spark.range(blocks, numPartitions=_parts(spark, blocks, cfg.partitions))

    def gen(which):
        def run(batches):
            for pdf in batches:
                for b in pdf["id"]:
                    yield _product_rows(seed, int(b), size)[which]
        return run

    return (ids.mapInPandas(gen(0), C.PRODUCTS.schema), ids.mapInPandas(gen(1), C.CREATIVES.schema))


def impressions_df(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    seed, size = cfg.seed, cfg.size
    blocks = world.n_user_blocks(size.users)
    params = cfg.params
    table = spark.sparkContext.broadcast(world.ProductTable.build(seed, size.products, params))
    start = np.datetime64(size.start_date, "D")

    def gen(batches):
        spec = WorldSpec.from_seed(seed, params)
        for pdf in batches:
            for b in pdf["id"]:
                imp = world.sample_impressions(seed, int(b), size, spec, table.value)
                days = pd.Series(start + imp["day"].astype("timedelta64[D]"))
                yield pd.DataFrame({
                    "event_date": days.dt.date,
                    "impression_id": imp["impression_id"],
                    "user_id": imp["user_id"],
                    "creative_id": imp["creative_id"],
                    "clicked": imp["clicked"].astype(np.int32),
                })

    return spark.range(blocks, numPartitions=_parts(spark, blocks, cfg.partitions)).mapInPandas(
        gen, C.IMPRESSIONS.schema)


def corrupt_users(users: DataFrame, fraction: float, seed: int) -> DataFrame:
    """Broken copies of a sample of users: null id, out-of-range age, duplicate id."""
    bad = users.sample(fraction=fraction, seed=seed)
    kind = F.abs(F.xxhash64("user_id", F.lit(seed))) % 3
    return bad.select(
        F.when(kind == 0, F.lit(None).cast("bigint")).otherwise(F.col("user_id")).alias("user_id"),
        *[F.when((kind == 1) & F.lit(a == "age"), F.lit(99)).otherwise(F.col(a)).alias(a)
          for a in C.USER_ATTRIBUTES])


def corrupt_impressions(imps: DataFrame, fraction: float, seed: int) -> DataFrame:
    """Broken copies of a sample of impressions: null, unknown user or creative, bad flag, duplicates."""
    bad = imps.sample(fraction=fraction, seed=seed)
    kind = F.abs(F.xxhash64("impression_id", F.lit(seed))) % 5
    new_id = F.col("impression_id") + F.lit(1 << 62)  # fresh ids, so only the intended rule fires
    return bad.select(
        "event_date",
        F.when(kind == 4, F.col("impression_id")).otherwise(new_id).alias("impression_id"),
        F.when(kind == 0, F.lit(None).cast("bigint"))
         .when(kind == 1, F.col("user_id") + F.lit(1 << 40)).otherwise(F.col("user_id")).alias("user_id"),
        F.when(kind == 2, F.col("creative_id") + F.lit(1 << 40)).otherwise(F.col("creative_id")).alias("creative_id"),
        F.when(kind == 3, F.lit(2)).otherwise(F.col("clicked")).alias("clicked"),
    )


def write_manifest(warehouse: str, cfg: SimulateConfig) -> None:
    if "://" in warehouse:  # a cluster warehouse: the seed is kept in the job's own log
        return
    path = Path(warehouse) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": cfg.seed, "size": asdict(cfg.size), "params": cfg.params.to_json()}, indent=2))


@dataclass
class SimulateResult:
    reports: list
    seconds: dict
    summary: dict

    def rows_generated(self) -> int:
        return sum(r.rows_in for r in self.reports)


def simulate_world(spark: SparkSession, cfg: SimulateConfig, warehouse: str, log=print) -> SimulateResult:
    """Simulate the world and load it into the raw tables (rejects to gaip.rejects)."""
    seconds, reports = {}, []
    write_manifest(warehouse, cfg)

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        seconds[name] = round(time.perf_counter() - t0, 3)
        if isinstance(out, ingest.LoadReport):
            reports.append(out)
            log(f"[simulate] {out.line()} in {seconds[name]:.1f}s")
        return out

    run_date = cfg.run_date
    raw_users = users_df(spark, cfg)
    if cfg.corrupt_fraction:
        raw_users = raw_users.unionByName(corrupt_users(raw_users, cfg.corrupt_fraction, cfg.seed))
    step("users", lambda: ingest.load(raw_users, ingest.label_users(raw_users), C.USERS, warehouse, run_date))

    raw_products, raw_creatives = products_df(spark, cfg)
    step("products", lambda: ingest.load(raw_products, ingest.label_rows(raw_products, C.PRODUCTS),
                                          C.PRODUCTS, warehouse, run_date))
    products = read_table(spark, C.PRODUCTS, warehouse)
    step("creatives", lambda: ingest.load(raw_creatives, ingest.label_creatives(raw_creatives, products),
                                           C.CREATIVES, warehouse, run_date))

    raw_imps = impressions_df(spark, cfg)
    if cfg.corrupt_fraction:
        raw_imps = raw_imps.unionByName(corrupt_impressions(raw_imps, cfg.corrupt_fraction, cfg.seed))
    users = read_table(spark, C.USERS, warehouse)
    creatives = read_table(spark, C.CREATIVES, warehouse)
    window = ingest.DateWindow(run_date, horizon_days=cfg.size.days - 1, future_days=0)
    step("impressions", lambda: ingest.load(
        raw_imps, ingest.label_impressions(raw_imps, users, creatives, window), C.IMPRESSIONS, warehouse, run_date))

    summary = step("summary", lambda: summarize(spark, warehouse))
    return SimulateResult(reports, seconds, summary)


def summarize(spark: SparkSession, warehouse: str) -> dict:
    """Row counts, overall CTR and CTR per category of the raw tables."""
    imps = read_table(spark, C.IMPRESSIONS, warehouse)
    creatives = read_table(spark, C.CREATIVES, warehouse).select("creative_id", "product_id")
    products = read_table(spark, C.PRODUCTS, warehouse).select("product_id", "category")
    per_cat = (imps.join(creatives, "creative_id").join(products, "product_id")
               .groupBy("category").agg(F.count("*").alias("impressions"), F.sum("clicked").alias("clicks"))
               .orderBy("category").collect())
    n_imp = sum(r["impressions"] for r in per_cat)
    n_clk = sum(r["clicks"] for r in per_cat)
    return {
        "rows": {t.fqn: read_table(spark, t, warehouse).count() for t in (C.USERS, C.PRODUCTS, C.CREATIVES)}
        | {C.IMPRESSIONS.fqn: n_imp},
        "ctr": n_clk / max(n_imp, 1),
        "ctr_by_category": {r["category"]: r["clicks"] / r["impressions"] for r in per_cat},
    }
