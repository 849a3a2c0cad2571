"""One clustering call of the regroup: the (product, user, attributes) rows of a bucket of products and the
title and image features of those products in, as two Arrow tables (Spark's cogrouped applyInArrow),
tagged user and group rows out, as an Arrow table.

A worker holds the trained PAAG (loaded once per Python worker) and, during a call, the features of that
call's products only: its memory does not grow with the catalogue. Each call computes e_u|t of its rows and, when the regroup
clusters preference profiles, the viewers' profiles (PAAGEmbedder.profile), both on each product's rows
in user order, so a rerun computes exactly the same numbers; it clusters all its products together
(osmf_core.grouping.kmeans), merges small groups and computes the group features, and counts the
impressions and clicks of each (creative, group) from the rows' impressions. Arrow in and out: the
ids and codes arrive as numpy views, and the user rows' empty group columns leave as null arrays, with no
Python object per row.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from osmf_core.data import catalog as C
from osmf_core.data.reader import FeatureBank
from osmf_core.data.store import local_frame, read_table
from osmf_core.grouping.group_features import group_points, mean_rows, merge_small
from osmf_core.grouping.heap import heap_threshold
from osmf_core.grouping.kmeans import cluster_products
from osmf_core.grouping.silhouette import silhouette
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.models.paag import load_model

_VEC = T.ArrayType(T.FloatType(), True)
CLUSTER_SCHEMA = T.StructType([
    T.StructField("kind", T.StringType(), False),  # "users", "group", "ctr", "call" (or "stats": grouping.split)
    T.StructField("product_id", T.LongType(), False),
    T.StructField("user_ids", T.ArrayType(T.LongType(), False), True),  # "users": one row per product, its
    T.StructField("group_ids", T.ArrayType(T.IntegerType(), False), True),  # viewers and their groups
    T.StructField("group_id", T.IntegerType(), True),
    T.StructField("k_star", T.IntegerType(), True),
    T.StructField("silhouette", T.DoubleType(), True),
    T.StructField("size", T.LongType(), True),
    T.StructField("centroid", _VEC, True),
    T.StructField("points", T.ArrayType(_VEC, True), True),
    T.StructField("merges", T.IntegerType(), True),
    T.StructField("sampled", T.BooleanType(), True),
    T.StructField("creative_id", T.LongType(), True),  # "ctr" rows: a (creative, group)'s impressions, clicks
    T.StructField("impressions", T.LongType(), True),
    T.StructField("clicks", T.LongType(), True),
    T.StructField("rows_in", T.LongType(), True),  # "call" rows: one per call, the rows it was given and the
    T.StructField("peak_rss_mib", T.DoubleType(), True),  # peak memory of its Python worker so far, and
    T.StructField("fixed_rss_mib", T.DoubleType(), True),  # that peak once the worker had loaded PAAG
])
ARROW_SCHEMA = to_arrow_schema(CLUSTER_SCHEMA)

PROJECT_STEP = 1 << 22  # input floats projected at a time (16 MiB): batch.project
FEATURE_SCHEMA = "product_id long, is_title boolean, creative_id long, items int, dim int, features array<float>"

_EMBEDDERS: dict = {}  # one PAAG per Python worker process, reused across tasks (the weights, no features)
_FIXED_MIB: list[float] = [0.0]  # the worker's peak resident memory when its PAAG was loaded


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def embedder(model: str, profiles: bool, mmap_above_mib: int = 0) -> PAAGEmbedder:
    """The worker's PAAG (loaded on its first call), without features: each call brings its products'.
    On that first call the worker also sets its heap's mmap threshold (heap_threshold)."""
    key = (model, profiles)
    if key not in _EMBEDDERS:
        import torch
        torch.set_num_threads(1)  # one task per core: Spark already runs the cores in parallel
        heap_threshold(mmap_above_mib)
        _EMBEDDERS[key] = PAAGEmbedder(model, None, profiles=profiles)
        _FIXED_MIB[0] = _peak_mib()
    return _EMBEDDERS[key]


def feature_rows(spark, cfg, warehouse: str, products=None):
    """FEATURE_SCHEMA rows: each product's title tokens and, when the regroup clusters preference profiles,
    each of its creatives' image patches, from the encoders the PAAG model was trained on, projected by the
    model (batch.project). The clustering calls receive their own products' rows of it (a cogroup), so no
    worker holds the whole catalogue's. cfg: a RegroupConfig; `products`: the ids to read (the window's, so
    that products nobody viewed are neither read nor projected; None: every product)."""
    return encoder_rows(spark, cfg, warehouse, products).mapInArrow(lambda batches: project(batches, cfg),
                                                                    FEATURE_SCHEMA)


def encoder_rows(spark, cfg, warehouse: str, products=None):
    """feature_rows before the projection: the frozen encoders' features, in FEATURE_SCHEMA."""
    blob = load_model(cfg.model)[1]
    ids = None if products is None else local_frame(spark, {"product_id": [int(p) for p in products]},
                                                    "product_id long")

    def of(df):  # only the products asked for, before the projection (a broadcast semi-join)
        return df if ids is None else df.join(F.broadcast(ids), "product_id", "left_semi")
    titles = (of(read_table(spark, C.TITLE_TOKENS, warehouse)).where(F.col("encoder") == blob["text_encoder"])
              .select("product_id", F.lit(True).alias("is_title"), F.lit(0).cast("long").alias("creative_id"),
                      F.col("n_tokens").alias("items"), "dim", "features"))
    if cfg.cluster_on != "profile":
        return titles
    creatives = of(read_table(spark, C.CREATIVES, warehouse).select("creative_id", "product_id"))
    images = (read_table(spark, C.IMAGE_PATCHES, warehouse).where(F.col("encoder") == blob["image_encoder"])
              .join(creatives, "creative_id")
              .select("product_id", F.lit(False).alias("is_title"), "creative_id", F.col("n_patches").alias("items"),
                      "dim", "features"))
    return titles.unionByName(images)


def _columns(feats: pa.Table) -> dict:
    """FEATURE_SCHEMA rows as numpy columns, `features` as one array (a view) per row."""
    cols = {c: feats.column(c).to_numpy() for c in ("product_id", "is_title", "creative_id", "items", "dim")}
    arr = feats.column("features").combine_chunks() if feats.num_rows else pa.array([], pa.list_(pa.float32()))
    values, offsets = arr.values.to_numpy(zero_copy_only=False), arr.offsets.to_numpy()
    cols["features"] = [values[offsets[i]:offsets[i + 1]] for i in range(len(arr))]
    return cols


def bank_of(feats: pa.Table) -> FeatureBank:
    """The feature bank of a table of FEATURE_SCHEMA rows: a call's products' title and image tokens,
    already projected by PAAG (`project`)."""
    return FeatureBank.from_rows(_columns(feats), projected=True)


def project(batches, cfg, step_floats: int = PROJECT_STEP):
    """mapInArrow over FEATURE_SCHEMA rows of the frozen encoders' features: the same rows with PAAG's
    d-wide projections of their tokens (title_tokens, patch_tokens: per token, so a call's bank is the
    whole bank's), before they are shuffled to the calls (3x fewer floats for a title, 10x for an image).
    A batch is projected `step_floats` input floats at a time (at least one row), each step its own output
    batch: the copies a step makes (its tokens stacked, the model's temporaries) stay a few tens of MiB
    whatever the batch holds (docs/benchmarks.md, eleventh step)."""
    model = embedder(cfg.model, cfg.cluster_on == "profile", cfg.mmap_above_mib).model
    for batch in batches:
        floats = np.cumsum(pc.list_value_length(batch.column("features")).fill_null(0).to_numpy())
        lo = 0
        while lo < batch.num_rows:
            hi = max(lo + 1, int(np.searchsorted(floats, (floats[lo - 1] if lo else 0) + step_floats, "right")))
            yield _projected(pa.Table.from_batches([batch.slice(lo, hi - lo)]), model)
            lo = hi


def _projected(t: pa.Table, model) -> pa.RecordBatch:
    """project's rows of one step."""
    import torch
    cols = _columns(t)
    items = cols["items"].astype(np.int64)
    out = [np.zeros(0, np.float32)] * t.num_rows
    for title, fn in ((True, model.title_tokens), (False, model.patch_tokens)):
        idx = np.flatnonzero(cols["is_title"] == title)
        if not len(idx):
            continue
        x = np.concatenate([cols["features"][i].reshape(-1, int(cols["dim"][i]))[:items[i]] for i in idx])
        with torch.no_grad():
            y = fn(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
        for i, part in zip(idx, np.split(y, np.cumsum(items[idx])[:-1])):
            out[i] = part.reshape(-1)
    offsets = np.concatenate([[0], np.cumsum([len(o) for o in out])]).astype(np.int32)
    feats = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(out), pa.float32()))
    return pa.RecordBatch.from_arrays([t.column(c).combine_chunks() for c in t.column_names[:4]]
                                      + [pa.array(np.full(t.num_rows, model.cfg.d, np.int32)), feats],
                                      names=t.column_names)


def cogroup(rows, feats, keys: list[str]):
    """rows.groupBy(keys).cogroup(feats.groupBy(keys)), both DataFrames partitioned alike by `keys`. Spark
    takes two sides hash-partitioned on the same number of keys as co-partitioned whatever the keys' types,
    and an int hashes apart from the same long: a key of two types would send a product's features to
    another task than its rows, so that is refused here."""
    for k in keys:
        if rows.schema[k].dataType != feats.schema[k].dataType:
            raise TypeError(f"cogroup key {k}: {rows.schema[k].dataType} in the rows, {feats.schema[k].dataType} "
                            "in the features")
    return rows.groupBy(*keys).cogroup(feats.groupBy(*keys))


@dataclass
class Embedded:
    """A call's rows sorted by (product, user): ids, e_u|t, and the space K-Means works in (the preference
    profiles, or e_u|t itself); `order` maps sorted rows back to the table's."""

    order: np.ndarray
    product_ids: np.ndarray
    uid: np.ndarray
    eut: np.ndarray
    space: np.ndarray


def embed_table(table: pa.Table, feats: pa.Table, cfg) -> Embedded:
    """e_u|t and the clustered space of a table of (product_id, user_id, attributes...) rows, from the
    FEATURE_SCHEMA rows of their products (`feats`)."""
    emb = embedder(cfg.model, cfg.cluster_on == "profile", cfg.mmap_above_mib).with_bank(bank_of(feats))
    product_ids, uid = table.column("product_id").to_numpy(), table.column("user_id").to_numpy()
    order = np.lexsort((uid, product_ids))
    pids = product_ids[order]
    attrs = np.stack([table.column(a).to_numpy() for a in C.USER_ATTRIBUTES], 1)[order]
    eut = emb(attrs, pids)
    space = emb.profile(eut, pids) if cfg.cluster_on == "profile" and len(eut) else eut
    return Embedded(order, pids, uid[order], eut, space)


def cluster_call(table: pa.Table, feats: pa.Table, cfg) -> pa.Table:
    """The cogrouped applyInArrow function: (product_id, user_id, shown_creatives, shown_clicked,
    attributes...) rows and the FEATURE_SCHEMA rows of their products -> CLUSTER_SCHEMA rows; the two lists
    are the creative and the 0/1 click of each impression of the row's user on the row's product, which
    become the "ctr" rows: impressions and clicks per (product, creative, group). cfg: a RegroupConfig."""
    e = embed_table(table, feats, cfg)
    labels, groups = cluster_rows(e.product_ids, e.eut, cfg, space=e.space)
    return pa.concat_tables([tagged(e.product_ids, e.uid, labels, groups), ctr_of(table, e, labels),
                             call_row(table.num_rows)])


def ctr_of(table: pa.Table, e: Embedded, labels: np.ndarray) -> pa.Table:
    """ctr_rows of a call's table, from the labels of its sorted rows."""
    row_labels = np.empty_like(labels)
    row_labels[e.order] = labels
    return ctr_rows(table.column("shown_creatives"), table.column("shown_clicked"),
                    table.column("product_id").to_numpy(), row_labels)


def call_row(rows_in: int) -> pa.Table:
    """The "call" row: the rows a call was given, its worker's peak resident memory so far, and what that
    peak was when the worker had just loaded its PAAG (the part no call size changes)."""
    return _table({"kind": pa.array(["call"]), "product_id": pa.array([0], pa.int64()),
                   "rows_in": pa.array([rows_in], pa.int64()), "peak_rss_mib": pa.array([_peak_mib()]),
                   "fixed_rss_mib": pa.array([_FIXED_MIB[0]])}, 1)


def ctr_rows(creatives: pa.ChunkedArray, clicked: pa.ChunkedArray, product_ids: np.ndarray,
             labels: np.ndarray) -> pa.Table:
    """Impressions and clicks per (product, creative, group) from each row's impressions (two lists of
    the same lengths: creative ids and 0/1 clicks), rows in the order of product_ids and labels."""
    creatives, clicked = creatives.combine_chunks(), clicked.combine_chunks()
    row = pc.list_parent_indices(creatives).to_numpy()
    f = pd.DataFrame({"product_id": product_ids[row], "creative_id": pc.list_flatten(creatives).to_numpy(),
                      "group_id": labels[row], "clicks": pc.list_flatten(clicked).to_numpy().astype(np.int64)})
    agg = f.groupby(["product_id", "creative_id", "group_id"], sort=True)["clicks"].agg(["size", "sum"])
    n = len(agg)
    cols = {"kind": pa.repeat("ctr", n).cast(pa.string()),
            **{c: pa.array(agg.index.get_level_values(c).to_numpy(), ARROW_SCHEMA.field(c).type)
               for c in ("product_id", "creative_id", "group_id")},
            "impressions": pa.array(agg["size"].to_numpy(), pa.int64()), "clicks": pa.array(agg["sum"].to_numpy(), pa.int64())}
    return _table(cols, n)


def cluster_frame(pdf: pd.DataFrame, cfg, profile=None) -> pd.DataFrame:
    """Cluster every product in a frame of (product_id, user_id, embedding) rows; tagged users and group rows.
    K-Means runs on profile(embedding, product_ids) of the rows sorted by (product, user) when a profile
    function is given (PAAGEmbedder.profile), else on the embedding (e_u|t); the group features are always
    in embedding space."""
    pdf = pdf.sort_values(["product_id", "user_id"], kind="stable")
    emb = np.stack(pdf["embedding"].to_numpy()).astype(np.float32) if len(pdf) else np.zeros((0, 1), np.float32)
    return cluster_arrays(pdf["product_id"].to_numpy(), pdf["user_id"].to_numpy(), emb, cfg, profile).to_pandas()


def cluster_arrays(product_ids: np.ndarray, uid: np.ndarray, emb: np.ndarray, cfg, profile=None) -> pa.Table:
    """cluster_frame on rows already sorted by (product, user), as arrays: ids (n,), embeddings (n, d)."""
    return tagged(product_ids, uid, *cluster_rows(product_ids, emb, cfg, profile=profile))


def cluster_rows(product_ids: np.ndarray, emb: np.ndarray, cfg, profile=None, space=None) -> tuple[np.ndarray, list[dict]]:
    """Rows sorted by (product, user): K-Means on their profiles (`space`, or profile(emb, product_ids), or
    e_u|t itself), small groups merged -> (each row's group id, the group rows)."""
    import torch
    torch.set_num_threads(1)  # one task per core, and the same arithmetic on any executor
    pids, starts = np.unique(product_ids, return_index=True)
    bounds = list(starts) + [len(product_ids)]
    if space is None:
        space = profile(emb, product_ids) if profile is not None and len(emb) else emb
    spans = list(zip(bounds[:-1], bounds[1:]))
    xs = [space[lo:hi] for lo, hi in spans]
    labels_all = np.zeros(len(product_ids), np.int32)
    groups = []
    for pid, x, (lo, hi), res in zip(pids, xs, spans, cluster_products(xs, cfg.cluster)):
        labels, _, merges = merge_small(x, res.labels, cfg.min_group_size)
        labels_all[lo:hi] = labels
        k = int(labels.max()) + 1
        sil = res.silhouette if merges == 0 else _silhouette_after_merge(x, labels, cfg)
        groups += group_rows(int(pid), emb[lo:hi], labels, cfg, k_star=k, silhouette=sil, merges=merges,
                             sampled=bool(res.sampled))
    return labels_all, groups


def group_rows(pid: int, e: np.ndarray, labels: np.ndarray, cfg, **product) -> list[dict]:
    """The group rows of one product: size, e_u|t centroid and percentile points of each group, with the
    product's K*, silhouette, merges and sampled flag."""
    rows = []
    for g in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == g)  # their row numbers: no copy of their e_u|t
        centroid = mean_rows(e, members)
        rows.append({"kind": "group", "product_id": pid, "group_id": g, "size": len(members),
                     "centroid": centroid.tolist(), **product,
                     "points": group_points(e, centroid, cfg.percentiles, cfg.point_users, rows=members).tolist()})
    return rows


def tagged(product_ids: np.ndarray, uid: np.ndarray, labels: np.ndarray, groups: list[dict]) -> pa.Table:
    """Rows sorted by product -> one "users" row per product (its viewers and their groups, as two lists:
    a few rows to cache, not one per viewer) and the group rows, in one CLUSTER_SCHEMA table."""
    pids, starts = np.unique(product_ids, return_index=True)
    offsets = pa.array(np.append(starts, len(uid)).astype(np.int32))
    lists = {c: pa.ListArray.from_arrays(offsets, pa.array(v, t)).cast(ARROW_SCHEMA.field(c).type)
             for c, v, t in (("user_ids", uid, pa.int64()), ("group_ids", labels, pa.int32()))}
    users = _table({"kind": pa.repeat("users", len(pids)).cast(pa.string()),
                    "product_id": pa.array(pids, pa.int64()), **lists}, len(pids))
    return pa.concat_tables([users, pa.Table.from_pylist(groups, schema=ARROW_SCHEMA)])


def _table(cols: dict, n: int, schema: pa.Schema = ARROW_SCHEMA) -> pa.Table:
    """A CLUSTER_SCHEMA table (or one of `schema`) of n rows from some of its columns; the others null."""
    return pa.table([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema], schema=schema)


def _silhouette_after_merge(x, labels, cfg) -> float:
    if len(np.unique(labels)) < 2:
        return 0.0
    return silhouette(x, labels, None if len(x) <= cfg.exact_max else cfg.sample_size, cfg.seed)
