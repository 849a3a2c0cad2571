"""The nightly regroup in Spark: e_u|t of every viewer, per-product K-Means with K* by silhouette,
group features, and the GAIP tables (paper section 3.2 eq. 5-6, Algorithm 1, section 4).

  1. viewers      distinct (product, user) of the log window, partitioned by user, persisted and counted per
                  product; products with fewer than `min_users` viewers are counted and skipped; the rest join
                  the users' attributes in those partitions (never a broadcast of every user)
  2-3. embed and cluster, in one cogrouped applyInArrow over buckets of products (a hash of the product
                  id): the shuffle moves each viewer's 20 attribute codes, not a d-wide embedding, and
                  each product's title and image tokens (projected by PAAG) to its bucket's call only, so
                  no worker holds the catalogue's features. Each call
                  (osmf_core.grouping.batch) computes e_u|t and the preference profiles of its rows,
                  clusters all its products together, merges small groups, computes the group features
                  and returns user rows and group rows in one tagged table

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.ledger import publish, roll_back_unpublished
from osmf_core.data.reader import require_tables
from osmf_core.data.store import exists_in, local_frame, read_table, write_table
from osmf_core.grouping.batch import CLUSTER_SCHEMA, cluster_call, cogroup, feature_rows
from osmf_core.grouping.buckets import bucket_labels, pack, task_count
from osmf_core.grouping.group_features import pairs
from osmf_core.grouping.heap import trimmed
from osmf_core.grouping.kmeans import PERCENTILES, ClusterConfig
from osmf_core.grouping.split import cluster_split
from osmf_core.models.paag import load_model

STAGE = "regroup"
CLUSTER_SPACES = ("profile", "eut")
# the job's Spark settings, under those of --conf and of a submitter (spark.run_job): the Python workers fork
# from a daemon that has imported torch (grouping.daemon), and all the job's tasks share them (Spark keeps a
# pool of workers per environment, and the job's tasks came in two that differed by the simplified-traceback
# variable alone); the JVMs collect garbage with the throughput collector and give to the optimising (C2) JIT
# only methods ten times as hot as by default (docs/benchmarks.md, seventh and tenth steps)
JVM_OPTIONS = ("-XX:+UseParallelGC -XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=6000 "
               "-XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000")
SPARK_CONF = {"spark.python.daemon.module": "osmf_core.grouping.daemon",
              "spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled": "false",
              "spark.driver.extraJavaOptions": JVM_OPTIONS, "spark.executor.extraJavaOptions": JVM_OPTIONS}


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
    rows_per_call: int = 60_000  # (product, user) rows clustered together in one applyInArrow call
    # tasks the clustering's buckets are dealt to at least. 0: the cores Spark has when the clustering starts
    # (under dynamic allocation set it to the cores of the executors the job will have, e.g. 24 x 4 = 96)
    tasks: int = 0
    # rows a task gets, about: more rows, more tasks, so that what a task sorts stays about this many rows
    # whatever the world's size (grouping.buckets.task_count): a clustering task's (product, user) rows (a
    # multiple of `tasks`), and the impressions each task of the viewers' aggregation gets (a multiple of the
    # shuffle partitions)
    rows_per_task: int = 1_000_000
    split_above: int = 250_000  # more viewers: clustered across tasks, fitted on a sample (grouping.split)
    # a Python worker's blocks above this many MiB are mapped and given back when freed (glibc; 0: glibc's
    # sliding threshold, under which the worker's heap grows with its largest call; grouping.heap)
    mmap_above_mib: int = 8
    trim_heap: bool = False  # give the workers' free heap pages back after each call: flat peaks, a little slower
    # group features
    min_exposure: int = 30  # group_ctr keeps (creative, group) rows with at least this many impressions
    pair_min_exposure: int = 100  # pairs: both creatives at least this many impressions in the group
    pair_ctr_ratio: float = 1.25  # pairs: the higher CTR at least this many times the lower
    seed: int = 0  # k-means++ seedings and silhouette samples

    def __post_init__(self):
        self.percentiles = tuple(int(p) for p in self.percentiles)
        if min(self.rows_per_call, self.split_above, self.rows_per_task) < 1 or min(self.tasks, self.mmap_above_mib) < 0:
            raise ValueError("rows_per_call, rows_per_task and split_above must be >= 1, tasks and mmap_above_mib >= 0")
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
def viewers(spark: SparkSession, warehouse: str, start: dt.date, end: dt.date,
            rows_per_task: int) -> tuple[DataFrame, int]:
    """The distinct (product, user) pairs of the window, each with the user's impressions on the product as
    two lists (shown_creatives, shown_clicked), from which the clustering call counts the groups'
    impressions and clicks. Persisted: counted per product, then clustered, from one scan (and a count of the
    window's impressions from the Parquet footers before it). The impressions are shuffled by user as they
    are (which groups each (product, user) too, and lets the users' attributes join them without another
    shuffle: with_attributes), into the shuffle partitions or the least multiple of them that holds about
    `rows_per_task` impressions a task (task_count), and aggregated after the shuffle only: an aggregation
    before it would sort each scan task's impressions to merge few of them (a user sees a product about 1.6
    times a week), and a task's sort would grow with the world. -> (pairs, partitions)."""
    window = read_table(spark, C.IMPRESSIONS, warehouse).where(F.col("event_date").between(F.lit(start), F.lit(end)))
    n = task_count(window.count(), int(spark.conf.get("spark.sql.shuffle.partitions")), rows_per_task)
    imps = window.join(read_table(spark, C.CREATIVES, warehouse).select("creative_id", "product_id"), "creative_id")
    return (imps.repartition(n, "user_id").groupBy("product_id", "user_id")
            .agg(F.collect_list("creative_id").alias("shown_creatives"), F.collect_list("clicked").alias("shown_clicked"))
            .persist(StorageLevel.MEMORY_AND_DISK)), n


def with_attributes(seen: DataFrame, warehouse: str, keep: DataFrame | None = None) -> DataFrame:
    """The viewers (viewers) with their users' attributes: the users shuffled into the viewers' partitions and
    joined there through a hash of each partition's users, so the viewers are not shuffled again and a task
    holds its partition's users only. Left to itself Spark broadcasts the users while their files are small
    (600,000 users): a hash of every user in the heap, which grew with the users until a 1 GiB heap no
    longer held it (docs/benchmarks.md, sixteenth step). `keep`: a small frame of product ids (and columns for
    the rows), joined first: the whole and the split products each join only their own viewers to the users."""
    if keep is not None:
        seen = seen.join(F.broadcast(keep), "product_id")
    users = read_table(seen.sparkSession, C.USERS, warehouse).select("user_id", *C.USER_ATTRIBUTES)
    return seen.join(users.hint("shuffle_hash"), "user_id")


# ---------------------------------------------------------------------------------- step 2-3
def cluster(rows_of, cfg: RegroupConfig, sizes: dict[int, int], feats: DataFrame, tasks: int) -> DataFrame:
    """(product, user, attributes) rows of the products in `sizes` (product id -> rows; rows_of(keep): the rows
    of the products of the small frame `keep`, with its columns, as with_attributes gives them): products packed
    into buckets of about `rows_per_call` rows, the buckets dealt evenly to `tasks` tasks (task_count); one
    cogrouped applyInArrow call per bucket gets its rows and its products' features (`feats`: feature_rows),
    embeds the rows (e_u|t) and clusters its products (grouping.batch)."""
    spark = feats.sparkSession
    n = max(-(-sum(sizes.values()) // cfg.rows_per_call), tasks)
    label = bucket_labels(spark, n, tasks)
    of = {pid: label[b] for pid, b in pack(sizes, n).items()}

    def small() -> DataFrame:  # its own copy of the small frame for each side of the cogroup
        return local_frame(spark, {"product_id": list(of), "bucket": list(of.values())}, "product_id long, bucket int")
    keyed_rows = rows_of(small()).repartition(tasks, "bucket").select(
        "bucket", "product_id", "user_id", "shown_creatives", "shown_clicked", *C.USER_ATTRIBUTES)
    keyed_feats = feats.join(F.broadcast(small()), "product_id").repartition(tasks, "bucket")
    # the features partitioned as the rows: a bucket's products' features go to its task, no other
    return cogroup(keyed_rows, keyed_feats, ["bucket"]).applyInArrow(
        lambda table, f: trimmed(cluster_call(table, f, cfg), cfg.trim_heap), CLUSTER_SCHEMA)


# ---------------------------------------------------------------------------------- step 4
class Laps:
    """Seconds of each stage of a run, in order (`lap(name)` closes the stage that ran since the last lap)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = self._t0 = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._t
        self._t = now

    @property
    def total(self) -> float:
        return time.perf_counter() - self._t0


def _summary(result: DataFrame):
    """Products, groups, mean K* and silhouette, merges and sampled silhouettes of the clustering output."""
    return result.where(F.col("kind") == "group").groupBy("product_id").agg(
        F.first("k_star").alias("k"), F.first("silhouette").alias("s"), F.first("merges").alias("m"),
        F.first("sampled").cast("int").alias("sampled")).agg(
        F.count("*").alias("products"), F.sum("k").alias("groups"), F.avg("k").alias("k"), F.avg("s").alias("s"),
        F.sum("m").alias("m"), F.sum("sampled").alias("sampled")).first()


def regroup(spark: SparkSession, cfg: RegroupConfig, warehouse: str, log=print) -> dict:
    """Write the GAIP tables of one run date; return the metrics (with the seconds of each stage)."""
    laps = Laps()
    start, end = validate(spark, cfg, warehouse)
    undone = roll_back_unpublished(spark, warehouse)
    if undone:
        log(f"[regroup] undid the commits of a run that did not finish, in {', '.join(undone)}")
    laps.lap("validate")
    seen, viewer_tasks = viewers(spark, warehouse, start, end, cfg.rows_per_task)
    counts = dict(seen.groupBy("product_id").count().collect())  # viewers per product: 2M products, 32 MB
    sizes = {p: n for p, n in counts.items() if n >= cfg.min_users}
    n_products, n_kept, n_rows = len(counts), len(sizes), sum(sizes.values())
    if n_rows == 0:
        seen.unpersist()
        raise ConfigError(f"no product has {cfg.min_users} viewers in {start}..{end}: lower --min-users "
                          "or widen --window-days")
    log(f"[regroup] {start}..{end}: {n_kept} of {n_products} products have >= {cfg.min_users} viewers; "
        f"{n_rows:,} (product, user) rows")
    rows_of = lambda keep: with_attributes(seen, warehouse, keep)  # noqa: E731  (each path its own products)
    laps.lap("viewers")
    whole = {p: n for p, n in sizes.items() if n <= cfg.split_above}
    feats = feature_rows(spark, cfg, warehouse, products=sizes)  # the window's products only
    tasks = task_count(sum(whole.values()), cfg.tasks or spark.sparkContext.defaultParallelism, cfg.rows_per_task)
    result, cached = cluster(rows_of, cfg, whole, feats, tasks), [seen]
    if len(whole) < len(sizes):
        log(f"[regroup] {len(sizes) - len(whole)} products above {cfg.split_above:,} viewers: clustered across tasks")
        split, split_cached = cluster_split(rows_of, cfg, {p: n for p, n in sizes.items() if p not in whole}, feats, log)
        result, cached = result.unionByName(split), cached + split_cached
    result = result.persist()
    n_result = result.count()  # runs embedding and clustering once
    for frame in cached:
        frame.unpersist()
    laps.lap("embed_cluster")
    date = F.lit(end).cast("date")
    where = f"run_date = '{end.isoformat()}'"
    user_groups = result.where(F.col("kind") == "users").select(
        date.alias("run_date"), "product_id", F.inline(F.arrays_zip(F.col("user_ids").alias("user_id"),
                                                                   F.col("group_ids").alias("group_id"))))
    groups = result.where(F.col("kind") == "group").select(
        date.alias("run_date"), "product_id", "group_id", "k_star", "silhouette", "size", "centroid", "points",
        F.lit(list(cfg.percentiles)).cast(T.ArrayType(T.IntegerType())).alias("percentiles"))
    ctr_all = (result.where(F.col("kind") == "ctr").groupBy("product_id", "creative_id", "group_id")  # a split
               .agg(F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"))  # product's shards
               .withColumn("ctr", F.col("clicks") / F.col("impressions")))
    exposed = F.col("impressions") >= cfg.min_exposure
    ctr = ctr_all.where(exposed)
    pair_rows = pairs(ctr, cfg.pair_min_exposure, cfg.pair_ctr_ratio).persist()
    writes = ((user_groups, C.USER_GROUPS), (groups, C.GROUPS), (ctr.withColumn("run_date", date), C.GROUP_CTR),
              (pair_rows.withColumn("run_date", date), C.PAIRS))
    with ThreadPoolExecutor(len(writes) + 3) as pool:  # four tables, each its own commit, written at once
        done = [pool.submit(write_table, df, t, warehouse, where) for df, t in writes]
        summary = pool.submit(_summary, result)
        calls = pool.submit(lambda: result.where(F.col("kind") == "call").agg(
            F.count("*").alias("n"), F.max("rows_in").alias("rows"), F.max("peak_rss_mib").alias("rss"),
            F.max("fixed_rss_mib").alias("fixed")).first())
        ctr_counts = pool.submit(lambda: ctr_all.agg(F.count("*"), F.count_if(exposed)).first())  # all, kept
        for f in done:
            f.result()
        g, calls, (n_ctr_all, n_ctr) = summary.result(), calls.result(), ctr_counts.result()
    n_pairs = pair_rows.count()
    result.unpersist()
    pair_rows.unpersist()
    laps.lap("write")
    metrics = {
        "products_in_window": n_products, "products_grouped": int(g["products"]),
        "products_skipped_few_viewers": n_products - n_kept, "rows_embedded": n_rows,
        "groups": int(g["groups"]), "mean_k_star": float(g["k"]), "mean_silhouette": float(g["s"]),
        "groups_merged": int(g["m"]), "products_sampled_silhouette": int(g["sampled"]),
        "group_ctr_rows": n_ctr, "group_ctr_rows_low_exposure": n_ctr_all - n_ctr, "pairs": n_pairs,
        "embed_cluster_seconds": laps.seconds["embed_cluster"], "cluster_output_rows": n_result,
        "products_split": len(sizes) - len(whole), "viewer_tasks": viewer_tasks, "cluster_tasks": tasks,
        "cluster_calls": int(calls["n"]), "max_rows_per_call": int(calls["rows"]),
        "peak_worker_rss_mib": float(calls["rss"]), "worker_fixed_rss_mib": float(calls["fixed"]),
        **{f"seconds_{k}": v for k, v in laps.seconds.items()},
    }
    metrics.update(seconds=laps.total, rows_per_s=n_rows / laps.total)  # up to the metrics write and publish
    mdf = spark.createDataFrame([(end, STAGE, k, float(v)) for k, v in metrics.items()],
                                "run_date date, stage string, name string, value double")
    write_table(mdf, C.METRICS, warehouse, replace_where=f"{where} and stage = '{STAGE}'")
    run_id = publish(spark, warehouse, STAGE, end).run_id  # last: readers see the run from here on, whole
    log(f"[regroup] {metrics['products_grouped']} products -> {metrics['groups']} groups "
        f"(mean K* {metrics['mean_k_star']:.2f}, mean silhouette {metrics['mean_silhouette']:.3f}, "
        f"{metrics['groups_merged']} merges); group_ctr {n_ctr:,} rows (+{n_ctr_all - n_ctr:,} below "
        f"{cfg.min_exposure} impressions); {n_pairs:,} pairs; {metrics['rows_per_s']:,.0f} rows/s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in laps.seconds.items()) + ")")
    return {"run_date": end.isoformat(), "run_id": run_id, **metrics, "config": asdict(cfg)}
