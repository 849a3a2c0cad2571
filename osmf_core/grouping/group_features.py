"""What a regroup publishes per group (section 3.2, eq. 6): groups below the minimum size merged into the
nearest, the centroid and the percentile points (pure numpy), and from the groups' CTR per creative
(counted by the clustering call, osmf_core.grouping.batch) the preference pairs between creatives (Spark).
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from osmf_core.grouping.kmeans import PERCENTILES

STEP = 8192  # member rows at a time (4 MiB of 128-wide float32)


def merge_small(x: np.ndarray, labels: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge groups smaller than min_size into the nearest other group (smallest first), renumber.
    -> (labels, centroids, merges). A product whose users all fit one group keeps one group."""
    labels = labels.copy()
    merges = 0
    while True:
        ids, sizes = np.unique(labels, return_counts=True)
        if len(ids) < 2 or sizes.min() >= min_size:
            break
        cents = np.stack([x[labels == g].mean(0) for g in ids])
        j = int(np.argmin(sizes))
        others = np.delete(np.arange(len(ids)), j)
        members = labels == ids[j]
        d = ((x[members][:, None, :] - cents[others][None]) ** 2).sum(-1)
        labels[members] = ids[others][d.argmin(1)]
        merges += 1
    ids = np.unique(labels)
    labels = np.searchsorted(ids, labels)
    cents = np.stack([x[labels == g].mean(0) for g in range(len(ids))])
    return labels, cents.astype(np.float32), merges


def group_points(x: np.ndarray, centroid: np.ndarray, percentiles=PERCENTILES, point_users: int = 10,
                 targets: dict | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """One point per entry of the percentile set: the mean of `point_users` members whose distance to
    the centroid is nearest that percentile of the members' distances (or targets[p], given: grouping.split
    takes them from a sample); the j-th repeat of a percentile uses the j-th block of them (overlapping
    only when the group is too small for disjoint blocks). The members are the rows of x, or x[rows]: the
    distances are taken STEP rows at a time, so a group of any size costs one float per member."""
    n = len(x) if rows is None else len(rows)
    if n < point_users:
        raise ValueError(f"a group of {n} users cannot publish points of {point_users} users")
    dist = np.empty(n, np.result_type(x, centroid))
    for lo in range(0, n, STEP):
        part = x[lo:lo + STEP] if rows is None else x[rows[lo:lo + STEP]]
        dist[lo:lo + STEP] = np.linalg.norm(part - centroid, axis=1)
    out, seen, nearest = [], {}, {}
    for p in percentiles:
        j = seen.get(p, 0)
        seen[p] = j + 1
        if p not in nearest:  # the members nearest the percentile's distance, as many as its repeats take
            t = np.percentile(dist, p) if targets is None else targets[p]
            nearest[p] = nearest_first(np.abs(dist - t), min(list(percentiles).count(p) * point_users, n))
        lo = min(j * point_users, n - point_users)
        take = nearest[p][lo:lo + point_users]
        out.append(x[take if rows is None else rows[take]].mean(0))
    return np.stack(out).astype(np.float32)


def nearest_first(a: np.ndarray, k: int) -> np.ndarray:
    """np.argsort(a, kind="stable")[:k] of a 1-D array without NaN, without sorting all of it: the k-th
    smallest value v (a partition), then a stable sort of the entries <= v alone (in index order, so ties
    keep the full sort's order)."""
    if k >= len(a):
        return np.argsort(a, kind="stable")[:k]
    v = np.partition(a, k - 1)[k - 1]
    cand = np.flatnonzero(a <= v)
    return cand[np.argsort(a[cand], kind="stable")][:k]


def mean_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows].mean(0) of a float array, the same numbers, without the copy of x[rows]: numpy sums the
    rows of a 2-D array of two or more columns along axis 0 one after the other, so STEP rows at a time,
    each block summed onto the running total, is the same sum. One column is summed pairwise: copied."""
    if x.shape[1] < 2:
        return x[rows].mean(0)
    total = np.zeros((1, x.shape[1]), x.dtype)
    for lo in range(0, len(rows), STEP):
        total = np.add.reduce(np.concatenate([total, x[rows[lo:lo + STEP]]]), axis=0, keepdims=True)
    return total[0] / x.dtype.type(len(rows))


def pairs(ctr: DataFrame, min_exposure: int, ratio: float) -> DataFrame:
    """Same product and group, creative_a < creative_b, both exposed enough, CTRs apart by the ratio."""
    g = ctr.where(F.col("impressions") >= min_exposure).select("product_id", "group_id", "creative_id", "ctr")
    a = g.select("product_id", "group_id", F.col("creative_id").alias("creative_a"), F.col("ctr").alias("ctr_a"))
    b = g.select("product_id", "group_id", F.col("creative_id").alias("creative_b"), F.col("ctr").alias("ctr_b"))
    hi, lo = F.greatest("ctr_a", "ctr_b"), F.least("ctr_a", "ctr_b")
    return (a.join(b, ["product_id", "group_id"]).where(F.col("creative_a") < F.col("creative_b"))
            .where((hi > lo) & (hi >= F.lit(ratio) * lo))
            .withColumn("label", (F.col("ctr_a") > F.col("ctr_b")).cast("int")))
