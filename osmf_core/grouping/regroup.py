"""The nightly regroup in Spark: e_u|t of every viewer, per-product K-Means with K* by silhouette,
group features, and the GAIP tables (paper section 3.2 eq. 5-6, Algorithm 1, section 4).

  1. viewers      distinct (product, user) of the log window with the user's attributes; products with
                  fewer than `min_users` viewers are counted and skipped
  2-3. embed and cluster, in one applyInPandas over buckets of products (a hash of the product id): the
                  shuffle moves each viewer's 20 attribute codes, not a d-wide embedding. Each call (the
                  trained PAAG loaded once per Python worker) computes e_u|t of its rows and, when
                  cluster_on = "profile", the viewers' preference profiles (PAAGEmbedder.profile), both on
                  each product's rows in user order, so a rerun computes exactly the same numbers; it
                  clusters all its products together (osmf_core.grouping.kmeans), merges small groups and
                  computes the group features, and returns user rows and group rows in one tagged frame

What K-Means clusters (cluster_on):
  eut      e_u|t itself, as the paper does. On the simulated world its largest directions are what every
           product shares (how much a user clicks at all, and the attributes that drive it), so the groups
           follow those and not the product's hidden split (eval-groups: ARI near 0).
  profile  (default) e_u|t seen through the product's creatives: h_u|c(CA(e_u|t, creative)) for each of
           them, centred per user, i.e. which of this product's creatives the user is predicted to prefer.
           The groups are the users who rank the creatives alike, which is what a group-wise image needs.
  Either way the published group features (centroid, percentile points) are in e_u|t space, so the
  G-MLLM and the GRM read the same d-dimensional G_{s,k}; silhouette and K* are those of the clustered
  space.
  4. tables       gaip.groups, gaip.user_groups, gaip.group_ctr (low-exposure rows filtered),
                  gaip.pairs (same product and group, CTR-ordered) and gaip.metrics, each replacing the
                  run date's slice, so a rerun never duplicates
  5. publish      one row in the run ledger gaip.runs with the version of each table: readers of the latest
                  run read those versions, so a run killed between two commits is never seen half-written
                  (osmf_core.data.runs)
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.ledger import publish, roll_back_unpublished
from osmf_core.data.reader import require_tables
from osmf_core.data.store import exists_in, read_table, write_table
from osmf_core.grouping.group_features import group_ctr, group_points, merge_small, pairs
from osmf_core.grouping.kmeans import PERCENTILES, ClusterConfig, cluster_products
from osmf_core.grouping.silhouette import silhouette
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.models.paag import load_model

STAGE = "regroup"
CLUSTER_SPACES = ("profile", "eut")


@dataclass
class RegroupConfig:
    # the run
    model: str = "runs/paag/model.pt"  # trained PAAG model.pt (make train-paag)
    # what K-Means clusters: the preference profile over the product's creatives, or e_u|t
    cluster_on: str = field(default="profile", metadata={"choices": CLUSTER_SPACES})
    run_date: str = ""  # YYYY-MM-DD, last day of the log window (default: the last day in raw.impressions)
    window_days: int = 7  # days of impressions that define each product's viewers
    # clustering
    k_range: str = "2-5"  # K_min-K_max: the K values the silhouette chooses among
    percentiles: tuple[int, ...] = PERCENTILES  # percentile points published per group
    min_users: int = 100  # products with fewer viewers are not grouped
    min_group_size: int = 30  # smaller groups are merged into the nearest one
    point_users: int = 10  # users averaged into each published percentile point (>= k anonymity)
    restarts: int = 32  # k-means++ seedings per K (see ClusterConfig)
    exact_max: int = 3000  # exact silhouette up to this many viewers, sampled above
    sample_size: int = 3000  # users in the sampled silhouette
    rows_per_call: int = 60_000  # (product, user) rows clustered together in one applyInPandas call
    # group features
    min_exposure: int = 30  # group_ctr keeps (creative, group) rows with at least this many impressions
    pair_min_exposure: int = 100  # pairs: both creatives at least this many impressions in the group
    pair_ctr_ratio: float = 1.25  # pairs: the higher CTR at least this many times the lower
    seed: int = 0  # k-means++ seedings and silhouette samples

    def __post_init__(self):
        self.percentiles = tuple(int(p) for p in self.percentiles)
        try:
            self.k_min, self.k_max = (int(v) for v in str(self.k_range).split("-"))
        except ValueError:
            raise ValueError(f"--k-range takes K_min-K_max such as 2-5, got {self.k_range!r}") from None
        if self.run_date:
            try:
                dt.date.fromisoformat(self.run_date)
            except ValueError:
                raise ValueError(f"--run-date must be a date YYYY-MM-DD, got {self.run_date!r}") from None
        if self.cluster_on not in CLUSTER_SPACES:
            raise ValueError(f"cluster_on must be one of {CLUSTER_SPACES}, got {self.cluster_on!r}")
        if not self.percentiles or not all(0 <= p <= 100 for p in self.percentiles):
            raise ValueError(f"percentiles must be in [0, 100], got {self.percentiles}")
        if self.window_days < 1:
            raise ValueError("window_days must be >= 1")
        if self.point_users < 1 or self.min_group_size < self.point_users:
            raise ValueError("need 1 <= point_users <= min_group_size")
        try:
            self.cluster  # validates the K range and the silhouette sizes
        except ValueError as e:
            raise ValueError(f"K range {self.k_range}: {e}") from None
        if self.min_users < max(2 * self.min_group_size, self.k_max + 1):
            raise ValueError("min_users must be at least 2 x min_group_size and more than k_max")
        if self.pair_ctr_ratio < 1 or self.min_exposure < 1 or self.pair_min_exposure < self.min_exposure:
            raise ValueError("need pair_ctr_ratio >= 1 and 1 <= min_exposure <= pair_min_exposure")

    @property
    def cluster(self) -> ClusterConfig:
        return ClusterConfig(k_min=self.k_min, k_max=self.k_max, restarts=self.restarts,
                             exact_max=self.exact_max, sample_size=self.sample_size, seed=self.seed)


NEEDED = (C.IMPRESSIONS, C.CREATIVES, C.USERS, C.TITLE_TOKENS)


def check_model(cfg: RegroupConfig) -> RegroupConfig:
    """`cfg`, or ConfigError (one line) unless cfg.model is a PAAG model file that can cluster as asked (local
    paths; a remote model is checked where it loads). The job calls it before Spark starts."""
    if "://" in cfg.model:
        return cfg
    if not Path(cfg.model).is_file():
        raise ConfigError(f"--model {cfg.model} does not exist: train PAAG first (make train-paag)")
    try:
        model = load_model(cfg.model)[0]
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError, ... on a file that is no model
        why = (str(e).splitlines() or [""])[0][:80]
        raise ConfigError(f"--model {cfg.model} is not a PAAG model file ({type(e).__name__}: {why})") from None
    if cfg.cluster_on == "profile" and model.cfg.rung != "full":
        raise ConfigError(f"--model {cfg.model} is the PAAG rung {model.cfg.rung!r}: --cluster-on profile needs "
                          "the full model (e_u|c); train the full rung or pass --cluster-on eut")
    return cfg


def validate(spark: SparkSession, cfg: RegroupConfig, warehouse: str) -> tuple[dt.date, dt.date]:
    """Check what the job needs before any work; the (start, end) of its log window. ConfigError if not."""
    check_model(cfg)
    require_tables(NEEDED, warehouse, exists_in(spark, warehouse))
    first, last = read_table(spark, C.IMPRESSIONS, warehouse).agg(F.min("event_date"), F.max("event_date")).first()
    if last is None:
        raise ConfigError("raw.impressions is empty: simulate or ingest logs first")
    end = dt.date.fromisoformat(cfg.run_date) if cfg.run_date else last
    start = end - dt.timedelta(days=cfg.window_days - 1)
    if end > last:
        raise ConfigError(f"--run-date {end} is after the last day of raw.impressions ({last}): "
                          "its window would be incomplete")
    if end < first:
        raise ConfigError(f"empty window {start}..{end}: raw.impressions starts on {first}")
    return start, end


# ---------------------------------------------------------------------------------- step 1
def viewers(spark: SparkSession, warehouse: str, start: dt.date, end: dt.date) -> tuple[DataFrame, DataFrame]:
    """(impressions of the window with product_id, distinct (product, user) rows with attributes)."""
    imps = (read_table(spark, C.IMPRESSIONS, warehouse)
            .where(F.col("event_date").between(F.lit(start), F.lit(end)))
            .join(read_table(spark, C.CREATIVES, warehouse).select("creative_id", "product_id"), "creative_id"))
    users = read_table(spark, C.USERS, warehouse).select("user_id", *C.USER_ATTRIBUTES)
    return imps, imps.select("product_id", "user_id").distinct().join(users, "user_id")


_EMBEDDERS: dict = {}  # one PAAG per Python worker process, reused across tasks


def _embedder(model: str, warehouse: str, profiles: bool):
    key = (model, warehouse, profiles)
    if key not in _EMBEDDERS:
        import torch
        torch.set_num_threads(1)  # one task per core: Spark already runs the cores in parallel
        _EMBEDDERS[key] = PAAGEmbedder(model, warehouse, profiles=profiles)
    return _EMBEDDERS[key]


# ---------------------------------------------------------------------------------- step 2-3
_VEC = T.ArrayType(T.FloatType(), True)
CLUSTER_SCHEMA = T.StructType([
    T.StructField("kind", T.StringType(), False),  # "user" or "group"
    T.StructField("product_id", T.LongType(), False),
    T.StructField("user_id", T.LongType(), True),
    T.StructField("group_id", T.IntegerType(), False),
    T.StructField("k_star", T.IntegerType(), True),
    T.StructField("silhouette", T.DoubleType(), True),
    T.StructField("size", T.LongType(), True),
    T.StructField("centroid", _VEC, True),
    T.StructField("points", T.ArrayType(_VEC, True), True),
    T.StructField("merges", T.IntegerType(), True),
    T.StructField("sampled", T.BooleanType(), True),
])


def cluster_frame(pdf: pd.DataFrame, cfg: RegroupConfig, profile=None) -> pd.DataFrame:
    """Cluster every product in a frame of (product_id, user_id, embedding) rows; tagged user and group rows.
    K-Means runs on profile(embedding, product_ids) of the rows sorted by (product, user) when a profile
    function is given (PAAGEmbedder.profile), else on the embedding (e_u|t); the group features are always
    in embedding space."""
    pdf = pdf.sort_values(["product_id", "user_id"], kind="stable")
    emb = np.stack(pdf["embedding"].to_numpy()).astype(np.float32) if len(pdf) else np.zeros((0, 1), np.float32)
    return cluster_arrays(pdf["product_id"].to_numpy(), pdf["user_id"].to_numpy(), emb, cfg, profile)


def cluster_arrays(product_ids: np.ndarray, uid: np.ndarray, emb: np.ndarray, cfg: RegroupConfig,
                   profile=None) -> pd.DataFrame:
    """cluster_frame on rows already sorted by (product, user), as arrays: ids (n,), embeddings (n, d)."""
    import torch
    torch.set_num_threads(1)  # one task per core, and the same arithmetic on any executor
    pids, starts = np.unique(product_ids, return_index=True)
    bounds = list(starts) + [len(product_ids)]
    space = profile(emb, product_ids) if profile is not None and len(emb) else emb
    spans = list(zip(bounds[:-1], bounds[1:]))
    xs = [space[lo:hi] for lo, hi in spans]
    users, groups = [], []
    for pid, x, (lo, hi), res in zip(pids, xs, spans, cluster_products(xs, cfg.cluster)):
        labels, _, merges = merge_small(x, res.labels, cfg.min_group_size)
        k = int(labels.max()) + 1
        sil = res.silhouette if merges == 0 else _silhouette_after_merge(x, labels, cfg)
        users.append(pd.DataFrame({"kind": "user", "product_id": pid, "user_id": uid[lo:hi], "group_id": labels}))
        e = emb[lo:hi]
        for g in range(k):
            members = e[labels == g]
            centroid = members.mean(0)
            groups.append({"kind": "group", "product_id": pid, "group_id": g, "k_star": k, "silhouette": sil,
                           "size": len(members), "centroid": centroid,
                           "points": list(group_points(members, centroid, cfg.percentiles, cfg.point_users)),
                           "merges": merges, "sampled": res.sampled})
    out = pd.concat([*users, pd.DataFrame(groups)], ignore_index=True) if users else \
        pd.DataFrame(columns=CLUSTER_SCHEMA.fieldNames())
    for c in ("user_id", "k_star", "size", "merges"):  # pandas holds them as floats next to NaN
        out[c] = out[c].astype("Int64")
    group_row = (out["kind"] == "group").to_numpy()
    for c in ("silhouette", "centroid", "points", "sampled"):  # nulls, not NaN, on user rows
        out[c] = pd.Series([v if g else None for g, v in zip(group_row, out[c])], dtype=object)
    return out[CLUSTER_SCHEMA.fieldNames()]


def _silhouette_after_merge(x, labels, cfg: RegroupConfig) -> float:
    if len(np.unique(labels)) < 2:
        return 0.0
    return silhouette(x, labels, None if len(x) <= cfg.exact_max else cfg.sample_size, cfg.seed)


def cluster(rows: DataFrame, cfg: RegroupConfig, total_rows: int, warehouse: str) -> DataFrame:
    """(product, user, attributes) rows: products hashed into buckets of about `rows_per_call` rows; one
    applyInPandas call per bucket embeds its rows (e_u|t) and clusters its products."""
    buckets = max(1, -(-total_rows // cfg.rows_per_call))
    keyed = rows.withColumn("bucket", F.pmod(F.xxhash64("product_id", F.lit(cfg.seed)), F.lit(buckets)))
    attrs, profiles = list(C.USER_ATTRIBUTES), cfg.cluster_on == "profile"

    def run(pdf):
        emb = _embedder(cfg.model, warehouse, profiles)
        pdf = pdf.sort_values(["product_id", "user_id"], kind="stable")
        pids = pdf["product_id"].to_numpy()
        eut = emb(pdf[attrs].to_numpy(np.int64), pids)
        return cluster_arrays(pids, pdf["user_id"].to_numpy(), eut, cfg, emb.profile if profiles else None)

    return keyed.select("bucket", "product_id", "user_id", *attrs).groupBy("bucket").applyInPandas(run, CLUSTER_SCHEMA)


# ---------------------------------------------------------------------------------- step 4


def regroup(spark: SparkSession, cfg: RegroupConfig, warehouse: str, log=print) -> dict:
    """Write the GAIP tables of one run date; return the metrics."""
    t0 = time.perf_counter()
    start, end = validate(spark, cfg, warehouse)
    undone = roll_back_unpublished(spark, warehouse)
    if undone:
        log(f"[regroup] undid the commits of a run that did not finish, in {', '.join(undone)}")
    imps, rows = viewers(spark, warehouse, start, end)
    counts = rows.groupBy("product_id").count()
    n_products = counts.count()
    kept = counts.where(F.col("count") >= cfg.min_users)
    rows = rows.join(kept.select("product_id"), "product_id").persist()
    n_rows, n_kept = rows.count(), kept.count()
    if n_rows == 0:
        raise ConfigError(f"no product has {cfg.min_users} viewers in {start}..{end}: lower --min-users "
                          "or widen --window-days")
    log(f"[regroup] {start}..{end}: {n_kept} of {n_products} products have >= {cfg.min_users} viewers; "
        f"{n_rows:,} (product, user) rows")
    t_embed = time.perf_counter()
    result = cluster(rows, cfg, n_rows, warehouse).persist()
    n_result = result.count()  # runs embedding and clustering once
    t_cluster = time.perf_counter()
    date = F.lit(end).cast("date")
    where = f"run_date = '{end.isoformat()}'"
    user_groups = result.where(F.col("kind") == "user").select(
        date.alias("run_date"), "product_id", "user_id", "group_id")
    groups = result.where(F.col("kind") == "group").select(
        date.alias("run_date"), "product_id", "group_id", "k_star", "silhouette", "size", "centroid", "points",
        F.lit(list(cfg.percentiles)).cast(T.ArrayType(T.IntegerType())).alias("percentiles"))
    write_table(user_groups, C.USER_GROUPS, warehouse, replace_where=where)
    write_table(groups, C.GROUPS, warehouse, replace_where=where)
    ug = read_table(spark, C.USER_GROUPS, warehouse).where(F.col("run_date") == F.lit(end))
    ctr, ctr_all = group_ctr(imps, ug, cfg.min_exposure)
    write_table(ctr.withColumn("run_date", date), C.GROUP_CTR, warehouse, replace_where=where)
    ctr_written = read_table(spark, C.GROUP_CTR, warehouse).where(F.col("run_date") == F.lit(end))
    write_table(pairs(ctr_written.drop("run_date"), cfg.pair_min_exposure, cfg.pair_ctr_ratio)
                .withColumn("run_date", date), C.PAIRS, warehouse, replace_where=where)
    g = result.where(F.col("kind") == "group").groupBy("product_id").agg(
        F.first("k_star").alias("k"), F.first("silhouette").alias("s"), F.first("merges").alias("m"),
        F.first("sampled").cast("int").alias("sampled")).agg(
        F.count("*").alias("products"), F.sum("k").alias("groups"), F.avg("k").alias("k"), F.avg("s").alias("s"),
        F.sum("m").alias("m"), F.sum("sampled").alias("sampled")).first()
    n_ctr_all = ctr_all.count()
    n_ctr = ctr_written.count()
    n_pairs = read_table(spark, C.PAIRS, warehouse).where(F.col("run_date") == F.lit(end)).count()
    seconds = time.perf_counter() - t0
    metrics = {
        "products_in_window": n_products, "products_grouped": int(g["products"]),
        "products_skipped_few_viewers": n_products - n_kept, "rows_embedded": n_rows,
        "groups": int(g["groups"]), "mean_k_star": float(g["k"]), "mean_silhouette": float(g["s"]),
        "groups_merged": int(g["m"]), "products_sampled_silhouette": int(g["sampled"]),
        "group_ctr_rows": n_ctr, "group_ctr_rows_low_exposure": n_ctr_all - n_ctr, "pairs": n_pairs,
        "embed_cluster_seconds": t_cluster - t_embed, "seconds": seconds,
        "rows_per_s": n_rows / seconds, "cluster_output_rows": n_result,
    }
    mdf = spark.createDataFrame([(end, STAGE, k, float(v)) for k, v in metrics.items()],
                                "run_date date, stage string, name string, value double")
    write_table(mdf, C.METRICS, warehouse, replace_where=f"{where} and stage = '{STAGE}'")
    run_id = publish(spark, warehouse, STAGE, end).run_id  # last: readers see the run from here on, whole
    rows.unpersist()
    result.unpersist()
    log(f"[regroup] {metrics['products_grouped']} products -> {metrics['groups']} groups "
        f"(mean K* {metrics['mean_k_star']:.2f}, mean silhouette {metrics['mean_silhouette']:.3f}, "
        f"{metrics['groups_merged']} merges); group_ctr {n_ctr:,} rows (+{n_ctr_all - n_ctr:,} below "
        f"{cfg.min_exposure} impressions); {n_pairs:,} pairs; {n_rows / seconds:,.0f} rows/s")
    return {"run_date": end.isoformat(), "run_id": run_id, **metrics, "config": asdict(cfg)}
