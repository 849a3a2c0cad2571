"""Products too large for one task (more than `split_above` viewers): K-Means fitted on a bounded sample of
the product's viewers, every viewer assigned in parallel across tasks, and the group features from
per-task statistics, with the k-anonymity guarantee of grouping.batch. No task holds more than a shard of
about `rows_per_call` viewers, or the sample. Every viewer is embedded once (the sample's twice).

  fit      one task per product: a sample of about `fit_max` viewers (chosen by a hash of the user id, so
           a rerun draws the same sample) embedded and clustered as grouping.batch clusters a product: K*,
           the silhouette (of the sample, as batch's sampled silhouette) and the centroids in the
           clustered space; and, with the sample's viewers assigned to their nearest centroid as every
           viewer will be, each group's e_u|t centre and the percentiles of its members' distances to it
           (the targets of the points)
  assign   one task per shard (a hash of the user id, about rows_per_call viewers each): e_u|t, the
           profile, the nearest centroid; the shard's viewers and their groups, its (creative, group)
           impressions and clicks, per group the count and the sum of e_u|t, and per group and percentile
           the viewers whose distance to the group's centre is nearest the target (as many as the
           percentile's blocks need) with their e_u|t: the points' candidates
  merge    a group smaller than min_group_size (or with fewer than point_users viewers in the sample,
           whose targets would describe too few) loses its centroid; the sample's centres and targets are
           computed again for the remaining centroids and the product is assigned again (batch merges such
           a group into the nearest; here each of its viewers goes to their own nearest)
  publish  each group's size and e_u|t centroid from the shards' counts and sums (every viewer); its
           points from the candidates merged across shards: the j-th block of point_users viewers nearest
           the target is averaged into the point, as group_points does on one frame, so no point describes
           fewer than point_users viewers
The targets are the sample's: a point is the mean of the viewers nearest the sample's percentile distance,
measured from the sample's centre (batch measures them on all the product's viewers, which would take
another pass over every viewer: docs/benchmarks.md, eighth step).
Each pass is a cogroup of its rows with their product's projected features (batch.feature_rows, copied
once per shard and cached beside the rows), so no task holds another product's features. The rows are
shuffled into (product, shard) partitions once and cached.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from osmf_core.data.store import local_frame
from osmf_core.grouping.batch import (ARROW_SCHEMA, CLUSTER_SCHEMA, _table, call_row, cogroup, ctr_of,
                                      embed_table, tagged)
from osmf_core.grouping.heap import trimmed
from osmf_core.grouping.kmeans import cluster_products

SHARD = ["product_id", "shard"]
FIT_SCHEMA = ("product_id long, k_star int, silhouette double, centroids array<array<float>>, fit_on long, "
              "centres array<array<float>>, targets array<array<double>>, members array<long>")
CAND = [T.StructField("percentile", T.IntegerType(), True), T.StructField("gap", T.DoubleType(), True),
        T.StructField("user_id", T.LongType(), True), T.StructField("vector", T.ArrayType(T.FloatType()), True)]
ASSIGN_SCHEMA = T.StructType(CLUSTER_SCHEMA.fields + CAND)  # CLUSTER_SCHEMA rows, and "cand" rows
ASSIGN_ARROW = to_arrow_schema(ASSIGN_SCHEMA)


def cluster_split(rows_of, cfg, sizes: dict[int, int], feats: DataFrame,
                  log=print) -> tuple[DataFrame, list[DataFrame]]:
    """CLUSTER_SCHEMA rows ("users" per shard, "ctr" per shard, "call", "group") of the products in `sizes`
    (product id -> viewers; rows_of(keep): the viewers of the products of the small frame `keep`, with their
    attributes and its columns), each clustered across tasks, and the frames it cached, which the caller
    unpersists once it has materialised the rows. cfg: a RegroupConfig; feats: batch.feature_rows, of which
    each call receives its own product's rows (cogrouped by product, or by (product, shard)).

    The rows are joined, keyed by shard and shuffled into (product, shard) partitions once, and cached
    there: the fit's sample, the two passes and the candidates' embedding read them without another join
    or shuffle. These caches are on disk, not in the heap: they grow with the products' viewers, and held in a
    1 GiB heap at 600,000 users they left too little for the reads Spark does not budget (the image patches'
    column batches), which failed there (docs/benchmarks.md, sixteenth step)."""
    spark, t0 = feats.sparkSession, time.perf_counter()
    cols = {"product_id": [int(p) for p in sizes], "n": [int(n) for n in sizes.values()],
            "shards": [-(-int(n) // cfg.rows_per_call) for n in sizes.values()]}  # a product's viewers, its shards
    big = local_frame(spark, cols, "product_id long, n long, shards int")
    shard = F.pmod(F.xxhash64("user_id", F.lit(cfg.seed + 1)), F.col("shards"))  # int on both sides of the cogroups
    n_parts = max(sum(cols["shards"]), cfg.tasks or spark.sparkContext.defaultParallelism)
    sharded = (rows_of(big).withColumn("shard", shard.cast("int"))
               .repartition(n_parts, "product_id", "shard").persist(StorageLevel.DISK_ONLY))
    by_product = feats.join(F.broadcast(big.select("product_id")), "product_id").persist(StorageLevel.DISK_ONLY)
    per_shard = (by_product.join(F.broadcast(big), "product_id")  # a product's features, once per shard
                 .withColumn("shard", F.explode(F.sequence(F.lit(0), F.col("shards") - 1))).drop("n", "shards")
                 .repartition(n_parts, "product_id", "shard").persist(StorageLevel.DISK_ONLY))
    uniform = F.pmod(F.xxhash64("user_id", F.lit(cfg.seed)), F.lit(1 << 30)) / float(1 << 30)
    sample = sharded.where(uniform < F.lit(cfg.cluster.fit_max) / F.col("n"))
    entries = sorted(set(cfg.percentiles))
    fits = {r["product_id"]: r for r in _cogroup(sample, by_product, ["product_id"], _fit, FIT_SCHEMA, cfg, entries)
            .collect()}
    cents = {p: np.asarray(f["centroids"], np.float32) for p, f in fits.items()}
    described = dict(fits)  # each product's sample under its current centroids: centres, targets, members
    log(f"[regroup] split: {len(fits)} products fitted on samples ({time.perf_counter() - t0:.1f} s)")
    merges = dict.fromkeys(cents, 0)
    need = {p: cfg.percentiles.count(p) * cfg.point_users for p in entries}
    while True:
        assigned = _cogroup(sharded, per_shard, SHARD, _assign, ASSIGN_SCHEMA, cfg, dict(cents), dict(described),
                            entries, need).persist()
        stats = assigned.where(F.col("kind") == "stats").groupBy("product_id", "group_id").agg(
            F.sum("size").alias("size"), F.array_agg("centroid").alias("sums")).collect()
        size = {(r["product_id"], r["group_id"]): r["size"] for r in stats}
        few = {(p, g) for (p, g), n in size.items()
               if n < cfg.min_group_size or described[p]["members"][g] < cfg.point_users}
        small = {p for p, _ in few if len(cents[p]) > 1}
        if not small:
            break
        for p in small:  # the smallest such group's centroid goes; its viewers are assigned again with the rest
            g = min((size[(q, g)], g) for q, g in few if q == p)[1]
            cents[p] = np.delete(cents[p], g, axis=0)
            merges[p] += 1
        again = sample.where(F.col("product_id").isin(sorted(small)))
        described.update({r["product_id"]: r for r in _cogroup(
            again, by_product, ["product_id"], _fit, FIT_SCHEMA, cfg, entries, {p: cents[p] for p in small}).collect()})
        log(f"[regroup] {len(small)} large products had a group below {cfg.min_group_size} viewers: assigning again")
        assigned.unpersist()
    centroid = {(r["product_id"], r["group_id"]): np.sum(r["sums"], 0) / r["size"] for r in stats}
    cands = assigned.where(F.col("kind") == "cand").select(
        "product_id", "group_id", *(f.name for f in CAND)).toPandas()
    groups = _group_rows(cands, cfg, fits, size, centroid, merges)
    log(f"[regroup] split: {len(size)} groups assigned, points from {len(cands):,} candidates "
        f"({time.perf_counter() - t0:.1f} s)")
    group_df = spark.createDataFrame([tuple(g.get(f) for f in CLUSTER_SCHEMA.fieldNames()) for g in groups],
                                     CLUSTER_SCHEMA)
    rows_out = assigned.where(F.col("kind").isin("users", "ctr", "call")).select(*CLUSTER_SCHEMA.fieldNames())
    return rows_out.unionByName(group_df), [sharded, assigned, by_product, per_shard]


def _cogroup(rows: DataFrame, feats: DataFrame, keys: list[str], fn, schema, cfg, *args) -> DataFrame:
    """fn(rows, features, cfg, *args) -> `schema` rows for each key of `rows` (partitioned by `keys` both sides,
    the rows' partitioning kept: the features follow them); a key with features and no rows returns none.
    cfg: the RegroupConfig (its trim_heap: the heap given back after each call, grouping.heap)."""
    out = to_arrow_schema(schema if isinstance(schema, T.StructType) else
                          rows.sparkSession.createDataFrame([], schema).schema)  # parsed here, on the driver

    def call(table: pa.Table, f: pa.Table) -> pa.Table:
        return trimmed(fn(table, f, cfg, *args), cfg.trim_heap) if table.num_rows else out.empty_table()
    return cogroup(rows, feats, keys).applyInArrow(call, schema)


def _fit(table: pa.Table, feats: pa.Table, cfg, entries: list[int], fixed: dict | None = None) -> pa.Table:
    """One product's sample: K*, silhouette and centroids (cluster_products; `fixed`: product -> the
    centroids to keep, no clustering), and the sample's description under them (`describe`)."""
    e = embed_table(table, feats, cfg)
    pid = int(e.product_ids[0])
    if fixed is None:
        (res,) = cluster_products([e.space], cfg.cluster)
        k, sil, cents = res.k_star, res.silhouette, res.centroids
    else:
        k, sil, cents = len(fixed[pid]), 0.0, fixed[pid]
    centres, targets, members = describe(e.eut, _nearest(e.space, cents), len(cents), entries)
    vecs = pa.list_(pa.list_(pa.float32()))
    return pa.table({"product_id": pa.array([pid], pa.int64()), "k_star": pa.array([k], pa.int32()),
                     "silhouette": [float(sil)], "centroids": pa.array([np.asarray(cents).tolist()], vecs),
                     "fit_on": pa.array([len(e.space)], pa.int64()), "centres": pa.array([centres.tolist()], vecs),
                     "targets": pa.array([targets.tolist()], pa.list_(pa.list_(pa.float64()))),
                     "members": pa.array([members.tolist()], pa.list_(pa.int64()))})


def describe(eut: np.ndarray, labels: np.ndarray, k: int, entries: list[int]):
    """Per group of k: the members' mean e_u|t (the centre; zeros for an empty group), the entries'
    percentiles of their distances to it (as group_points computes them; zeros for an empty group), and
    the members' count."""
    centres = np.zeros((k, eut.shape[1]), np.float32)
    targets = np.zeros((k, len(entries)))
    members = np.bincount(labels, minlength=k).astype(np.int64)
    for g in np.flatnonzero(members):
        x = eut[labels == g]
        centres[g] = x.mean(0)
        targets[g] = np.percentile(np.linalg.norm(x - centres[g], axis=1), entries)
    return centres, targets, members


def _nearest(space: np.ndarray, cents: np.ndarray) -> np.ndarray:
    d2 = (space * space).sum(1)[:, None] - 2.0 * space @ cents.T + (cents * cents).sum(1)[None, :]
    return d2.argmin(1).astype(np.int32)


def _assign(table: pa.Table, feats: pa.Table, cfg, cents: dict, described: dict, entries: list[int],
            need: dict) -> pa.Table:
    """One shard: its viewers' groups ("users"), (creative, group) counts ("ctr"), per group the count and
    the sum of e_u|t ("stats": size and centroid), the points' candidates ("cand") and the "call" row."""
    e = embed_table(table, feats, cfg)
    pid = int(e.product_ids[0])
    labels = _nearest(e.space, cents[pid])
    centres, targets = described[pid]["centres"], described[pid]["targets"]
    stats, cand = [], []
    for g in range(len(cents[pid])):
        members = np.flatnonzero(labels == g)
        stats.append((g, len(members), e.eut[members].sum(0, dtype=np.float64).astype(np.float32).tolist()))
        dist = np.linalg.norm(e.eut[members] - np.asarray(centres[g], np.float32), axis=1)
        cand += [(g, p, gap, members[i]) for p, gap, i in
                 nearest(dist, e.uid[members], dict(zip(entries, targets[g])), need)]
    n, m = len(stats), len(cand)
    stat_rows = _table({"kind": pa.repeat("stats", n).cast(pa.string()), "product_id": pa.array([pid] * n, pa.int64()),
                        "group_id": pa.array([g for g, _, _ in stats], pa.int32()),
                        "size": pa.array([c for _, c, _ in stats], pa.int64()),
                        "centroid": pa.array([v for _, _, v in stats], ARROW_SCHEMA.field("centroid").type)}, n)
    at = np.array([i for *_, i in cand], np.int64)
    cand_rows = {"kind": pa.repeat("cand", m).cast(pa.string()), "product_id": [pid] * m,
                 "group_id": [g for g, *_ in cand], "percentile": [p for _, p, _, _ in cand],
                 "gap": [gap for _, _, gap, _ in cand], "user_id": e.uid[at], "vector": list(e.eut[at])}
    rows = pa.concat_tables([tagged(e.product_ids, e.uid, labels, []), ctr_of(table, e, labels), stat_rows,
                             call_row(table.num_rows)])
    rows = _table(dict(zip(rows.column_names, rows.columns)), rows.num_rows, ASSIGN_ARROW)
    cand_rows = _table({c: pa.array(v, ASSIGN_ARROW.field(c).type) for c, v in cand_rows.items()}, m, ASSIGN_ARROW)
    return pa.concat_tables([rows, cand_rows])


def nearest(dist: np.ndarray, uid: np.ndarray, targets: dict, need: dict):
    """(percentile, gap, member's index) of the need[p] members nearest each target distance targets[p] (ties
    to the smaller user id): a shard's candidates for the group's points."""
    for p, t in targets.items():
        gap = np.abs(dist - t)
        for i in np.lexsort((uid, gap))[:need[p]]:
            yield p, float(gap[i]), int(i)


def points(near: dict, n: int, percentiles, point_users: int) -> list[np.ndarray]:
    """The group's points from candidates merged over its shards (near[p]: vectors sorted by gap, then user
    id): the j-th repeat of percentile p is the mean of the j-th block of point_users (group_points)."""
    seen, out = {}, []
    for p in percentiles:
        j = seen.get(p, 0)
        seen[p] = j + 1
        lo = min(j * point_users, n - point_users)
        out.append(near[p][lo:lo + point_users].mean(0))
    return out


def _group_rows(cands: pd.DataFrame, cfg, fits: dict, size: dict, centroid: dict, merges: dict) -> list[dict]:
    """The group rows: size, e_u|t centroid and the points (`points`) of every group of the split products."""
    cands = cands.sort_values(["product_id", "group_id", "percentile", "gap", "user_id"])
    near = {key: np.stack(f["vector"].to_numpy()) for key, f in cands.groupby(["product_id", "group_id", "percentile"])}
    rows = []
    for (pid, g), n in sorted(size.items()):
        pts = points({p: near[(pid, g, p)] for p in set(cfg.percentiles)}, n, cfg.percentiles, cfg.point_users)
        rows.append({"kind": "group", "product_id": pid, "group_id": g, "k_star": sum(k[0] == pid for k in size),
                     "silhouette": fits[pid]["silhouette"], "size": n, "points": [v.tolist() for v in pts],
                     "centroid": centroid[(pid, g)].astype(np.float32).tolist(), "merges": merges[pid],
                     "sampled": True})
    return rows
