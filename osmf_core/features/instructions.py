"""Spark: the G-MLLM instruction table and the GRM pair table of one regroup run date.

    feat.instructions   the four tasks of Table 5 (texts from osmf_core.features.templates), with the product
                        image where the task shows one and the group's features for the group token; plus
                        creative captioning (each creative's image and its background's style words)
    feat.grm_examples   gaip.pairs with both creative images and the group's features, split by product
                        into train and test (held-out products)

Both replace their rows of the run date on a rerun.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.ledger import published_in, read_published
from osmf_core.data.reader import require_tables
from osmf_core.data.runs import PUBLISHED, Run
from osmf_core.data.store import exists_in, read_table, write_table
from osmf_core.features.split import split_of
from osmf_core.grouping.group_features import pairs
from osmf_core.features.templates import (
    TABLE5_ATTRIBUTES,
    Teacher,
    background_words,
    behavioral_prompt_users,
    behavioral_response,
    best_ctr_teacher,
    group_analysis_response,
    render,
    template_index,
)
from osmf_core.world.model import CREATIVE_STRIDE


@dataclass
class CurationConfig:
    run_date: str = ""  # regroup run to read (default: the latest in gaip.groups)
    window_days: int = 7  # days of clicks before the run date for behavioral prediction
    context_clickers: int = 2  # behavioral prediction: clickers shown in the instruction
    behavior_examples: int = 2  # behavioral prediction: rows per (product, group), one creative each
    product_examples: int = 2  # product understanding: rows per product (different templates)
    test_share: float = 0.2  # share of products held out of every training stream (features.split)
    # the one-size reward model's pairs (feat.product_pairs): the regroup's pair rule, over all of a product's viewers
    pair_min_exposure: int = 100  # both creatives at least this many impressions in the window
    pair_ctr_ratio: float = 1.25  # the higher CTR at least this many times the lower
    seed: int = 0  # template choice, clicker choice, train/test split

    def __post_init__(self):
        if self.run_date:
            try:
                dt.date.fromisoformat(self.run_date)
            except ValueError:
                raise ConfigError(f"--run-date must be a date YYYY-MM-DD, got {self.run_date!r}") from None
        if self.window_days < 1:
            raise ConfigError("--window-days must be >= 1")
        if min(self.context_clickers, self.behavior_examples, self.product_examples) < 1:
            raise ConfigError("--context-clickers, --behavior-examples and --product-examples must be >= 1")
        if not 0 < self.test_share < 1:
            raise ConfigError(f"--test-share must be in (0, 1), got {self.test_share}")
        if self.pair_min_exposure < 1 or self.pair_ctr_ratio < 1:
            raise ConfigError("--pair-min-exposure must be >= 1 and --pair-ctr-ratio >= 1")


NEEDED = (C.GROUPS, C.USER_GROUPS, C.GROUP_CTR, C.PAIRS, C.USERS, C.PRODUCTS, C.CREATIVES, C.IMPRESSIONS)
TEXT_COLUMNS = ("task", "template", "product_id", "group_id", "example", "instruction", "response")
_TEXT_SCHEMA = T.StructType([C.INSTRUCTIONS.schema[c] for c in TEXT_COLUMNS])


def validate(spark: SparkSession, cfg: CurationConfig, warehouse: str) -> Run:
    """The regroup run to read (its date and table versions, from the run ledger); ConfigError when a table
    is missing or the date has no complete run."""
    require_tables(NEEDED, warehouse, exists_in(spark, warehouse))
    return published_in(spark, warehouse, cfg.run_date)


def group_features(groups: DataFrame) -> DataFrame:
    """(product_id, group_id, group_features, group_dim): centroid then percentile points, flattened."""
    return groups.select(
        "product_id", "group_id",
        F.flatten(F.concat(F.array("centroid"), "points")).alias("group_features"),
        F.size("centroid").alias("group_dim"))


def _pick(task: str, cfg: CurationConfig):
    return lambda pid, gid, ex: template_index(task, pid, gid, ex, cfg.seed)


# ---------------------------------------------------------------------------------- the four tasks
def group_analysis(ug: DataFrame, users: DataFrame, cfg: CurationConfig) -> DataFrame:
    """Most common value of every attribute per (product, group), aggregated in Spark, then rendered."""
    kv = F.explode(F.array(*[F.struct(F.lit(a).alias("attr"), F.col(a).alias("value")) for a in TABLE5_ATTRIBUTES]))
    counts = (ug.join(users, "user_id").select("product_id", "group_id", kv.alias("kv"))
              .groupBy("product_id", "group_id", "kv.attr", "kv.value").count())
    modes = (counts.groupBy("product_id", "group_id", "attr")  # ties: the smaller code, as most_common_profile
             .agg(F.max_by("value", F.struct(F.col("count"), -F.col("value"))).alias("mode"))
             .groupBy("product_id", "group_id").agg(F.map_from_entries(F.collect_list(F.struct("attr", "mode"))).alias("m")))
    pick = _pick("group_analysis", cfg)

    def fmt(pdf: pd.DataFrame) -> pd.DataFrame:
        out = []
        for pid, gid, m in zip(pdf["product_id"], pdf["group_id"], pdf["m"]):
            k = pick(pid, gid, 0)
            out.append(("group_analysis", k, pid, gid, 0, render("group_analysis", k),
                        group_analysis_response(dict(m))))
        return pd.DataFrame(out, columns=list(TEXT_COLUMNS))
    return modes.mapInPandas(lambda it: (fmt(p) for p in it), _TEXT_SCHEMA)


def behavioral_prediction(clicks: DataFrame, ug: DataFrame, users: DataFrame, titles: DataFrame,
                          cfg: CurationConfig) -> DataFrame:
    """Per (product, group), up to `behavior_examples` creatives with more than `context_clickers` clickers
    in the group: some clickers are the context, the next one is the answer (all chosen by a seeded hash)."""
    need = cfg.context_clickers + 1
    per_creative = Window.partitionBy("product_id", "group_id", "creative_id").orderBy("h", "user_id")
    chosen = (clicks.join(ug, ["product_id", "user_id"])
              .withColumn("h", F.xxhash64("user_id", "creative_id", F.lit(cfg.seed)))
              .withColumn("rank", F.row_number().over(per_creative)).where(F.col("rank") <= need)
              .withColumn("n", F.count("*").over(Window.partitionBy("product_id", "group_id", "creative_id")))
              .where(F.col("n") == need))
    per_group = Window.partitionBy("product_id", "group_id").orderBy("hc", "creative_id")
    creatives = (chosen.select("product_id", "group_id", "creative_id").distinct()
                 .withColumn("hc", F.xxhash64("creative_id", F.lit(cfg.seed)))
                 .withColumn("example", F.row_number().over(per_group) - 1)
                 .where(F.col("example") < cfg.behavior_examples).drop("hc"))
    rows = (chosen.join(creatives, ["product_id", "group_id", "creative_id"]).join(users, "user_id")
            .join(titles, "product_id"))
    pick = _pick("behavioral_prediction", cfg)
    ctx = cfg.context_clickers

    def fmt(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("rank")
        pid, gid, ex = int(pdf["product_id"].iloc[0]), int(pdf["group_id"].iloc[0]), int(pdf["example"].iloc[0])
        k = pick(pid, gid, ex)
        text = render("behavioral_prediction", k, pdf["title"].iloc[0], behavioral_prompt_users(pdf.iloc[:ctx]))
        return pd.DataFrame([("behavioral_prediction", k, pid, gid, ex, text,
                              behavioral_response(pdf.iloc[ctx]))],
                            columns=list(TEXT_COLUMNS))
    return rows.groupBy("product_id", "group_id", "example").applyInPandas(fmt, _TEXT_SCHEMA)


def product_understanding(titles: DataFrame, cfg: CurationConfig) -> DataFrame:
    pick = _pick("product_understanding", cfg)
    n = cfg.product_examples

    def fmt(pdf: pd.DataFrame) -> pd.DataFrame:
        out = [("product_understanding", pick(pid, -1, ex), pid, -1, ex,
                render("product_understanding", pick(pid, -1, ex)), title)
               for pid, title in zip(pdf["product_id"], pdf["title"]) for ex in range(n)]
        return pd.DataFrame(out, columns=list(TEXT_COLUMNS))
    return titles.mapInPandas(lambda it: (fmt(p) for p in it), _TEXT_SCHEMA)


def prompt_generation(ctr: DataFrame, creatives: DataFrame, titles: DataFrame, cfg: CurationConfig,
                      teacher: Teacher = best_ctr_teacher) -> DataFrame:
    """The teacher's background prompt per (product, group), from the group's CTR of every creative."""
    rows = (ctr.select("product_id", "group_id", "creative_id", "impressions", "clicks")
            .join(creatives.select("creative_id", "prompt"), "creative_id").join(titles, "product_id"))
    pick = _pick("prompt_generation", cfg)

    def fmt(pdf: pd.DataFrame) -> pd.DataFrame:
        pid, gid = int(pdf["product_id"].iloc[0]), int(pdf["group_id"].iloc[0])
        k = pick(pid, gid, 0)
        return pd.DataFrame([("prompt_generation", k, pid, gid, 0,
                              render("prompt_generation", k, pdf["title"].iloc[0]),
                              teacher(pdf.sort_values("creative_id").reset_index(drop=True)))],
                            columns=list(TEXT_COLUMNS))
    return rows.groupBy("product_id", "group_id").applyInPandas(fmt, _TEXT_SCHEMA)


def creative_captioning(creatives: DataFrame, cfg: CurationConfig) -> DataFrame:
    """One row per creative: its own image and the style words of its prompt (LLaVA stage-1 analog)."""
    pick = _pick("creative_captioning", cfg)
    stride = F.lit(CREATIVE_STRIDE)

    def fmt(pdf: pd.DataFrame) -> pd.DataFrame:
        out = [("creative_captioning", pick(pid, -1, ex), pid, -1, ex, render("creative_captioning", pick(pid, -1, ex)),
                background_words(prompt))
               for pid, ex, prompt in zip(pdf["product_id"], pdf["example"], pdf["prompt"])]
        return pd.DataFrame(out, columns=list(TEXT_COLUMNS)).assign(image=list(pdf["image"]))
    schema = T.StructType([*_TEXT_SCHEMA.fields, C.INSTRUCTIONS.schema["image"]])
    rows = creatives.select("product_id", (F.col("creative_id") - F.col("product_id") * stride).cast("int").alias("example"),
                            "prompt", "image")
    return rows.mapInPandas(lambda it: (fmt(p) for p in it), schema)


# ---------------------------------------------------------------------------------- the job
def product_pairs(impressions: DataFrame, creatives: DataFrame, titles: DataFrame, cfg: CurationConfig) -> DataFrame:
    """The one-size reward model's rows, as CAIG's: pairs of a product's creatives ordered by their CTR over
    all of the product's viewers in the window (the regroup's pair rule with the whole audience as one
    group, group_id -1), with both images, no group features, split by product like every other stream."""
    ctr = (impressions.join(creatives.select("creative_id", "product_id"), "creative_id")
           .groupBy("product_id", "creative_id").agg(F.count("*").alias("impressions"),
                                                     F.sum("clicked").alias("clicks"))
           .withColumn("ctr", F.col("clicks") / F.col("impressions")).withColumn("group_id", F.lit(-1)))
    img = creatives.select("creative_id", "image")
    empty_vec = F.lit([]).cast(C.PRODUCT_PAIRS.column("group_features").dtype)
    return (pairs(ctr, cfg.pair_min_exposure, cfg.pair_ctr_ratio).join(titles, "product_id")
            .join(img.withColumnRenamed("creative_id", "creative_a").withColumnRenamed("image", "image_a"), "creative_a")
            .join(img.withColumnRenamed("creative_id", "creative_b").withColumnRenamed("image", "image_b"), "creative_b")
            .withColumn("group_features", empty_vec).withColumn("group_dim", F.lit(0))
            .withColumn("split", split_of(F.col("product_id"), cfg.test_share, cfg.seed)))


def build_instructions(spark: SparkSession, cfg: CurationConfig, warehouse: str, teacher: Teacher = best_ctr_teacher,
        log=print) -> dict:
    """Write feat.instructions and feat.grm_examples for one run date; return row counts per task/split."""
    run = validate(spark, cfg, warehouse)
    day = dt.date.fromisoformat(run.run_date)
    on_day = F.col("run_date") == F.lit(day)

    def rd(t):  # gaip tables as the published run left them, the rest as they are now
        return read_published(spark, t, warehouse, run) if t.fqn in PUBLISHED else read_table(spark, t, warehouse)
    groups = group_features(rd(C.GROUPS).where(on_day)).cache()
    ug = rd(C.USER_GROUPS).where(on_day).select("product_id", "user_id", "group_id")
    users = rd(C.USERS).select("user_id", *TABLE5_ATTRIBUTES)
    products = rd(C.PRODUCTS).select("product_id", "title", "image")
    titles = products.select("product_id", "title")
    creatives = rd(C.CREATIVES).select("creative_id", "product_id", "prompt", "image")
    start = day - dt.timedelta(days=cfg.window_days - 1)
    window = rd(C.IMPRESSIONS).where(F.col("event_date").between(F.lit(start), F.lit(day)))
    clicks = (window.where(F.col("clicked") == 1)
              .join(creatives.select("creative_id", "product_id"), "creative_id")
              .select("product_id", "creative_id", "user_id").distinct())
    texts = (group_analysis(ug, users, cfg)
             .unionByName(behavioral_prediction(clicks, ug, users, titles, cfg))
             .unionByName(product_understanding(titles, cfg))
             .unionByName(prompt_generation(rd(C.GROUP_CTR).where(on_day), creatives, titles, cfg, teacher)))
    shows_image = F.col("instruction").contains("<image>")
    empty_vec = F.lit([]).cast(C.INSTRUCTIONS.column("group_features").dtype)
    with_image = (texts.join(products.select("product_id", "image"), "product_id")
                  .withColumn("image", F.when(shows_image, F.col("image")).otherwise(F.lit(b""))))
    instructions = (with_image.unionByName(creative_captioning(creatives, cfg))
                    .join(groups, ["product_id", "group_id"], "left")
                    .select(F.lit(day).alias("run_date"), *TEXT_COLUMNS,
                            "image",
                            F.coalesce("group_features", empty_vec).alias("group_features"),
                            F.coalesce("group_dim", F.lit(0)).alias("group_dim"),
                            split_of(F.col("product_id"), cfg.test_share, cfg.seed).alias("split")))
    where = f"run_date = '{day.isoformat()}'"
    log(f"[instructions] run {day}: writing {C.INSTRUCTIONS.fqn}")
    write_table(instructions, C.INSTRUCTIONS, warehouse, replace_where=where)

    img = creatives.select("creative_id", "image")
    group_pairs = (rd(C.PAIRS).where(on_day)
             .join(groups, ["product_id", "group_id"]).join(titles, "product_id")
             .join(img.withColumnRenamed("creative_id", "creative_a").withColumnRenamed("image", "image_a"), "creative_a")
             .join(img.withColumnRenamed("creative_id", "creative_b").withColumnRenamed("image", "image_b"), "creative_b")
             .withColumn("split", split_of(F.col("product_id"), cfg.test_share, cfg.seed))
             .select(*C.GRM_EXAMPLES.column_names))
    log(f"[instructions] run {day}: writing {C.GRM_EXAMPLES.fqn}")
    write_table(group_pairs, C.GRM_EXAMPLES, warehouse, replace_where=where)

    log(f"[instructions] run {day}: writing {C.PRODUCT_PAIRS.fqn}")
    write_table(product_pairs(window, creatives, titles, cfg).withColumn("run_date", F.lit(day))
                .select(*C.PRODUCT_PAIRS.column_names), C.PRODUCT_PAIRS, warehouse, replace_where=where)

    counts = {r["task"]: r["count"] for r in
              read_table(spark, C.INSTRUCTIONS, warehouse).where(on_day).groupBy("task").count().collect()}
    splits = {r["split"]: r["count"] for r in
              read_table(spark, C.GRM_EXAMPLES, warehouse).where(on_day).groupBy("split").count().collect()}
    product_splits = {r["split"]: r["count"] for r in
                      read_table(spark, C.PRODUCT_PAIRS, warehouse).where(on_day).groupBy("split").count().collect()}
    groups.unpersist()
    summary = {"run_date": day.isoformat(), "instructions": counts, "grm_examples": splits,
               "product_pairs": product_splits}
    log(f"[instructions] {sum(counts.values()):,} instruction rows {counts}; GRM pairs {splits}; "
        f"product-level pairs {product_splits}")
    return summary
