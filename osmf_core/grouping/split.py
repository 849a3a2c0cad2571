"""Products too large for one task (more than `split_above` viewers): K-Means fitted on a bounded sample of
the product's viewers, every viewer assigned in parallel across tasks, and the group features from
per-task statistics, with the k-anonymity guarantee of grouping.batch. No task holds more than a shard of
about `rows_per_call` viewers, or the sample.

  fit      one task per product: a sample of about `fit_max` viewers (chosen by a hash of the user id, so
           a rerun draws the same sample) embedded and clustered as grouping.batch clusters a product: K*,
           the silhouette (of the sample, as batch's sampled silhouette) and the centroids in the
           clustered space
  assign   one task per shard (a hash of the user id, about rows_per_call viewers each): e_u|t, the
           profile, the nearest centroid; the shard's viewers and their groups, its (creative, group)
           impressions and clicks, and per group the count and the sum of e_u|t. A group smaller than
           min_group_size loses its centroid and the product is assigned again (batch merges such a
           group into the nearest; here each of its viewers goes to their own nearest)
  targets  each group's e_u|t centroid (sum / count); per shard each viewer's group and distance to it,
           one small row per viewer (cached), and Spark's percentile_approx of them per group: the
           percentile distances
  points   per shard of the distance rows, for each percentile the viewers nearest its distance (as many
           as the entry's blocks need); merged across shards, the j-th block of point_users nearest
           viewers is averaged into the point, as group_points does on one frame: no point describes fewer
           than point_users. Only these few viewers per product are embedded again, for their e_u|t
Each pass is a cogroup of its rows with their product's projected features (batch.feature_rows, copied
once per shard and cached beside the rows), so no task holds another product's features.
The rows are shuffled into (product, shard) partitions once and cached. The fit, assign and distance
passes each compute e_u|t and the profiles of their rows (the sample, then every viewer twice) rather
than keeping 128 floats per viewer between them.
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

from osmf_core.grouping.batch import (ARROW_SCHEMA, CLUSTER_SCHEMA, _table, call_row, cogroup, ctr_of,
                                      embed_table, tagged)
from osmf_core.grouping.kmeans import cluster_products

SHARD = ["product_id", "shard"]
FIT_SCHEMA = "product_id long, k_star int, silhouette double, centroids array<array<float>>, fit_on long"
DIST_SCHEMA = "product_id long, shard int, group_id int, user_id long, dist double"
CAND_SCHEMA = "product_id long, group_id int, percentile int, gap double, user_id long"
VEC_SCHEMA = "product_id long, user_id long, vector array<float>"


def cluster_split(rows: DataFrame, cfg, sizes: dict[int, int], feats: DataFrame,
                  log=print) -> tuple[DataFrame, list[DataFrame]]:
    """CLUSTER_SCHEMA rows ("users" per shard, "ctr" per shard, "call", "group") of the products in `sizes`
    (product id -> viewers), each clustered across tasks, and the frames it cached, which the caller
    unpersists once it has materialised the rows. cfg: a RegroupConfig; feats: batch.feature_rows, of which
    each call receives its own product's rows (cogrouped by product, or by (product, shard)).

    The rows are joined, keyed by shard and shuffled into (product, shard) partitions once, and cached
    there: the fit's sample, the two passes and the candidates' embedding read them without another join
    or shuffle."""
    spark, t0 = rows.sparkSession, time.perf_counter()
    products = [(int(p), int(n), -(-int(n) // cfg.rows_per_call)) for p, n in sizes.items()]  # id, viewers, shards
    big = spark.createDataFrame(products, "product_id long, n long, shards int")
    shard = F.pmod(F.xxhash64("user_id", F.lit(cfg.seed + 1)), F.col("shards"))  # int on both sides of the cogroups
    n_parts = max(sum(k for _, _, k in products), cfg.tasks or spark.sparkContext.defaultParallelism)
    sharded = (rows.join(F.broadcast(big), "product_id").withColumn("shard", shard.cast("int"))
               .repartition(n_parts, "product_id", "shard").persist(StorageLevel.MEMORY_AND_DISK))
    by_product = feats.join(F.broadcast(big.select("product_id")), "product_id").persist()
    per_shard = (by_product.join(F.broadcast(big), "product_id")  # a product's features, once per shard
                 .withColumn("shard", F.explode(F.sequence(F.lit(0), F.col("shards") - 1))).drop("n", "shards")
                 .repartition(n_parts, "product_id", "shard").persist())
    uniform = F.pmod(F.xxhash64("user_id", F.lit(cfg.seed)), F.lit(1 << 30)) / float(1 << 30)
    sample = sharded.where(uniform < F.lit(cfg.cluster.fit_max) / F.col("n"))
    fits = {r["product_id"]: r for r in _cogroup(sample, by_product, ["product_id"], _fit, FIT_SCHEMA, cfg).collect()}
    cents = {p: np.asarray(f["centroids"], np.float32) for p, f in fits.items()}
    log(f"[regroup] split: {len(fits)} products fitted on samples ({time.perf_counter() - t0:.1f} s)")
    merges = dict.fromkeys(cents, 0)
    while True:
        assigned = _cogroup(sharded, per_shard, SHARD, _assign, CLUSTER_SCHEMA, cfg, dict(cents)).persist()
        stats = assigned.where(F.col("kind") == "stats").groupBy("product_id", "group_id").agg(
            F.sum("size").alias("size"), F.array_agg("centroid").alias("sums")).collect()
        size = {(r["product_id"], r["group_id"]): r["size"] for r in stats}
        small = {p for (p, g), n in size.items() if n < cfg.min_group_size and len(cents[p]) > 1}
        if not small:
            break
        for p in small:  # the smallest group's centroid goes; its viewers are assigned again with the rest
            g = min((n, g) for (q, g), n in size.items() if q == p)[1]
            cents[p] = np.delete(cents[p], g, axis=0)
            merges[p] += 1
        log(f"[regroup] {len(small)} large products had a group below {cfg.min_group_size} viewers: assigning again")
        assigned.unpersist()
    centroid = {(r["product_id"], r["group_id"]): np.sum(r["sums"], 0) / r["size"] for r in stats}
    log(f"[regroup] split: {len(size)} groups assigned ({time.perf_counter() - t0:.1f} s)")
    entries = sorted(set(cfg.percentiles))
    dist = _cogroup(sharded, per_shard, SHARD, _distances, DIST_SCHEMA, cfg, cents, centroid).persist(
        StorageLevel.MEMORY_AND_DISK)
    targets = {(r["product_id"], r["group_id"]): dict(zip(entries, r["t"])) for r in dist.groupBy(
        "product_id", "group_id").agg(F.percentile_approx("dist", [p / 100 for p in entries], 1_000_000).alias("t"))
        .collect()}
    need = {p: cfg.percentiles.count(p) * cfg.point_users for p in entries}
    log(f"[regroup] split: percentile distances ({time.perf_counter() - t0:.1f} s)")
    cands = dist.groupBy("product_id", "shard").applyInArrow(lambda t: _candidates(t, targets, need),
                                                             CAND_SCHEMA).toPandas()
    with_vec = cands.merge(_vectors(sharded, by_product, cands, cfg), on=["product_id", "user_id"],
                           validate="many_to_one")
    if len(with_vec) != len(cands):
        raise RuntimeError(f"{len(cands) - len(with_vec)} point candidates found no row to embed")
    cands = with_vec
    groups = _group_rows(cands, cfg, fits, size, centroid, merges)
    log(f"[regroup] split: points from {len(cands):,} candidates ({time.perf_counter() - t0:.1f} s)")
    group_df = spark.createDataFrame([tuple(g.get(f) for f in CLUSTER_SCHEMA.fieldNames()) for g in groups],
                                     CLUSTER_SCHEMA)
    dist.unpersist()
    return assigned.where(F.col("kind") != "stats").unionByName(group_df), [sharded, assigned, by_product, per_shard]


def _cogroup(rows: DataFrame, feats: DataFrame, keys: list[str], fn, schema, *args) -> DataFrame:
    """fn(rows, features, *args) -> `schema` rows for each key of `rows` (partitioned by `keys` both sides,
    the rows' partitioning kept: the features follow them); a key with features and no rows returns none."""
    out = to_arrow_schema(schema if isinstance(schema, T.StructType) else
                          rows.sparkSession.createDataFrame([], schema).schema)  # parsed here, on the driver

    def call(table: pa.Table, f: pa.Table) -> pa.Table:
        return fn(table, f, *args) if table.num_rows else out.empty_table()
    return cogroup(rows, feats, keys).applyInArrow(call, schema)


def _fit(table: pa.Table, feats: pa.Table, cfg) -> pa.Table:
    e = embed_table(table, feats, cfg)
    (res,) = cluster_products([e.space], cfg.cluster)
    return pa.table({"product_id": pa.array([int(e.product_ids[0])], pa.int64()),
                     "k_star": pa.array([res.k_star], pa.int32()), "silhouette": [res.silhouette],
                     "centroids": pa.array([res.centroids.tolist()], pa.list_(pa.list_(pa.float32()))),
                     "fit_on": pa.array([len(e.space)], pa.int64())})


def _nearest(space: np.ndarray, cents: np.ndarray) -> np.ndarray:
    d2 = (space * space).sum(1)[:, None] - 2.0 * space @ cents.T + (cents * cents).sum(1)[None, :]
    return d2.argmin(1).astype(np.int32)


def _labelled(table: pa.Table, feats: pa.Table, cfg, cents: dict):
    """A shard's rows embedded (batch.embed_table), its product, and each row's nearest centroid: what every
    pass over a shard starts from, computed the same way each time."""
    e = embed_table(table, feats, cfg)
    pid = int(e.product_ids[0])
    return e, pid, _nearest(e.space, cents[pid])


def _assign(table: pa.Table, feats: pa.Table, cfg, cents: dict) -> pa.Table:
    """One shard: its viewers' groups ("users"), (creative, group) counts ("ctr"), per group the count and
    the sum of e_u|t ("stats": size and centroid), and the "call" row."""
    e, pid, labels = _labelled(table, feats, cfg, cents)
    stats = [(g, int((labels == g).sum()), e.eut[labels == g].sum(0, dtype=np.float64).astype(np.float32).tolist())
             for g in range(len(cents[pid]))]
    n = len(stats)
    stat_rows = _table({"kind": pa.repeat("stats", n).cast(pa.string()), "product_id": pa.array([pid] * n, pa.int64()),
                        "group_id": pa.array([g for g, _, _ in stats], pa.int32()),
                        "size": pa.array([c for _, c, _ in stats], pa.int64()),
                        "centroid": pa.array([v for _, _, v in stats], ARROW_SCHEMA.field("centroid").type)}, n)
    return pa.concat_tables([tagged(e.product_ids, e.uid, labels, []), ctr_of(table, e, labels), stat_rows,
                             call_row(table.num_rows)])


def _distances(table: pa.Table, feats: pa.Table, cfg, cents: dict, centroid: dict) -> pa.Table:
    """One shard: each viewer's group and distance (e_u|t) to the group's centroid."""
    e, pid, labels = _labelled(table, feats, cfg, cents)
    c = np.stack([centroid[(pid, g)] for g in range(len(cents[pid]))])  # float64, as the sums
    n = len(labels)
    return pa.table({"product_id": pa.array(np.full(n, pid), pa.int64()),
                     "shard": pa.array(np.full(n, table.column("shard")[0].as_py() if n else 0), pa.int32()),
                     "group_id": pa.array(labels, pa.int32()), "user_id": pa.array(e.uid, pa.int64()),
                     "dist": pa.array(np.linalg.norm(e.eut - c[labels], axis=1).astype(np.float64))})


def _candidates(table: pa.Table, targets: dict, need: dict) -> pa.Table:
    """One shard's distance rows: for each group and percentile, the `need` viewers nearest the
    percentile's distance (`nearest`). No embedding: the distances are those of the pass before."""
    pid = table.column("product_id").to_numpy()
    group, uid, dist = (table.column(c).to_numpy() for c in ("group_id", "user_id", "dist"))
    out = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        key = (int(pid[0]), int(g))
        out += [(*key, p, gap, u) for p, gap, u in nearest(dist[members], uid[members], targets[key], need)]
    cols = list(zip(*out)) if out else [[] for _ in range(5)]
    return pa.table({"product_id": pa.array(cols[0], pa.int64()), "group_id": pa.array(cols[1], pa.int32()),
                     "percentile": pa.array(cols[2], pa.int32()), "gap": pa.array(cols[3], pa.float64()),
                     "user_id": pa.array(cols[4], pa.int64())})


def _vectors(sharded: DataFrame, feats: DataFrame, cands: pd.DataFrame, cfg) -> pd.DataFrame:
    """e_u|t of the candidates only (a few hundred viewers per product), from their rows in `sharded`."""
    want = sharded.sparkSession.createDataFrame(cands[["product_id", "user_id"]].drop_duplicates(),
                                                "product_id long, user_id long")
    return _cogroup(sharded.join(F.broadcast(want), ["product_id", "user_id"]), feats, ["product_id"], _embedded,
                    VEC_SCHEMA, cfg).toPandas()


def _embedded(table: pa.Table, feats: pa.Table, cfg) -> pa.Table:
    e = embed_table(table, feats, cfg)
    return pa.table({"product_id": pa.array(e.product_ids, pa.int64()), "user_id": pa.array(e.uid, pa.int64()),
                     "vector": pa.array(list(e.eut), pa.list_(pa.float32()))})


def nearest(dist: np.ndarray, uid: np.ndarray, targets: dict, need: dict):
    """(percentile, gap, user id) of the need[p] members nearest each target distance targets[p] (ties to
    the smaller user id): a shard's candidates for the group's points."""
    for p, t in targets.items():
        gap = np.abs(dist - t)
        for i in np.lexsort((uid, gap))[:need[p]]:
            yield p, float(gap[i]), int(uid[i])


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
