"""Products too large for one task (grouping.split): the distributed points equal the in-memory ones, and a
product of 1,000,000 viewers is grouped in shards within the test session's 2 GiB Spark JVM."""
import shutil

import numpy as np
import pytest
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data.store import append_rows, read_table
from osmf_core.grouping.group_features import group_points
from osmf_core.grouping.kmeans import PERCENTILES
from osmf_core.grouping.split import describe, nearest, points

from conftest import REGROUP


@pytest.mark.parametrize("targets_from", ["all", "sample"])
def test_points_from_shard_candidates_equal_the_points_of_the_whole_group(targets_from):
    """Each shard keeps, per percentile, the members nearest its target distance; merged, the blocks of
    point_users give exactly group_points' points for the same centre and targets: the percentiles of all
    members' distances (batch), or those of a sample's distances to the sample's centre (split.describe)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    uid = rng.permutation(10_000)[:500]
    entries = sorted(set(PERCENTILES))
    if targets_from == "all":
        centre = x.mean(0)
        targets = {p: float(np.percentile(np.linalg.norm(x - centre, axis=1), p)) for p in entries}
    else:
        sample = rng.choice(500, 120, replace=False)
        centres, t, members = describe(x[sample], np.zeros(120, np.int64), 1, entries)
        assert members.tolist() == [120]
        centre, targets = centres[0], dict(zip(entries, t[0]))
        assert not np.allclose(centre, x.mean(0), atol=1e-3)  # the sample's centre, not the group's
    dist = np.linalg.norm(x - centre, axis=1)
    need = {p: PERCENTILES.count(p) * 10 for p in targets}
    cands = {p: [] for p in targets}
    for shard in np.array_split(rng.permutation(500), 4):
        for p, gap, i in nearest(dist[shard], uid[shard], targets, need):
            cands[p].append((gap, uid[shard][i], x[shard][i]))
    near = {p: np.stack([v for _, _, v in sorted(c, key=lambda r: (r[0], r[1]))]) for p, c in cands.items()}
    got = points(near, len(x), PERCENTILES, 10)
    np.testing.assert_allclose(np.stack(got), group_points(x, centre, PERCENTILES, 10, targets=targets), atol=1e-6)


def test_describe_gives_each_groups_centre_percentile_distances_and_members():
    eut = np.array([[0, 0], [2, 0], [0, 2], [2, 2], [10, 10], [12, 10]], np.float32)
    labels = np.array([0, 0, 0, 0, 2, 2])
    centres, targets, members = describe(eut, labels, 3, [0, 50, 100])
    assert members.tolist() == [4, 0, 2]
    np.testing.assert_allclose(centres, [[1, 1], [0, 0], [11, 10]])
    np.testing.assert_allclose(targets, [[2 ** 0.5] * 3, [0, 0, 0], [1, 1, 1]], rtol=1e-6)


@pytest.fixture(scope="module")
def million_wh(spark, paag_wh, tmp_path_factory):
    """The tiny world plus 1,000,000 new users who each saw a creative of one product in the window:
    (warehouse, that product)."""
    wh = str(tmp_path_factory.mktemp("million") / "wh")
    shutil.copytree(paag_wh, wh)
    imps = read_table(spark, C.IMPRESSIONS, wh)
    last = imps.agg(F.max("event_date")).first()[0]
    creatives = read_table(spark, C.CREATIVES, wh).select("creative_id", "product_id")
    pid = creatives.groupBy("product_id").count().orderBy(F.desc("count"), "product_id").first()["product_id"]
    ids = sorted(r["creative_id"] for r in creatives.where(F.col("product_id") == pid).collect())
    base = 10_000_000
    users = spark.range(base, base + 1_000_000).select(
        F.col("id").alias("user_id"),
        *(F.pmod(F.xxhash64("id", F.lit(i)), F.lit(card)).cast("int").alias(a)
          for i, (a, (card, _)) in enumerate(C.USER_ATTRIBUTES.items())))
    append_rows(users, C.USERS, wh)
    shown = F.element_at(F.array(*map(F.lit, ids)), (F.pmod(F.xxhash64("user_id", F.lit(99)), F.lit(len(ids))) + 1).cast("int"))
    new = users.select(F.lit(last).alias("event_date"), (F.col("user_id") + 500_000_000).alias("impression_id"),
                       "user_id", shown.alias("creative_id"),
                       (F.pmod(F.xxhash64("user_id", F.lit(7)), F.lit(20)) == 0).cast("int").alias("clicked"))
    append_rows(new, C.IMPRESSIONS, wh)
    return wh, pid


def test_a_product_of_a_million_viewers_is_grouped_in_shards_within_a_2_gib_executor(spark, million_wh, paag_model):
    from osmf_core.grouping.regroup import RegroupConfig, regroup
    wh, pid = million_wh
    assert spark.sparkContext.getConf().get("spark.driver.memory") == "2g"  # local mode: the executors' JVM
    cfg = RegroupConfig(model=paag_model, **{**REGROUP, "rows_per_call": 125_000}, split_above=200_000, tasks=3,
                        trim_heap=True)  # the heap given back after each call (grouping.heap)
    m = regroup(spark, cfg, wh, log=lambda *_: None)
    assert m["products_split"] == 1
    assert m["max_rows_per_call"] <= 140_000  # shards of about rows_per_call: no call held the product's viewers
    assert m["peak_worker_rss_mib"] < 2048
    ug = read_table(spark, C.USER_GROUPS, wh).where(F.col("product_id") == pid)
    n = ug.count()
    assert n >= 1_000_000 and ug.select("user_id").distinct().count() == n  # every viewer, exactly once
    # the other products in one bucket per task (their rows are far below rows_per_call), the large one in shards
    assert m["cluster_calls"] == 3 + -(-n // cfg.rows_per_call)
    groups = read_table(spark, C.GROUPS, wh).where(F.col("product_id") == pid).orderBy("group_id").collect()
    sizes = dict(ug.groupBy("group_id").count().collect())
    assert [g["group_id"] for g in groups] == list(range(len(groups))) and len(groups) == groups[0]["k_star"] >= 1
    assert all(g["size"] == sizes[g["group_id"]] >= cfg.min_group_size for g in groups)
    assert all(len(g["points"]) == len(cfg.percentiles) for g in groups)
    # the groups' CTR rows, counted shard by shard, equal the window's impressions joined with the groups
    window = read_table(spark, C.IMPRESSIONS, wh).where(F.col("event_date") > F.date_sub(F.lit(m["run_date"]).cast("date"), 3))
    expect = (window.join(read_table(spark, C.CREATIVES, wh).where(F.col("product_id") == pid).select("creative_id"),
                          "creative_id").join(ug.select("user_id", "group_id"), "user_id")
              .groupBy("creative_id", "group_id").agg(F.count("*").alias("impressions"), F.sum("clicked").alias("clicks"))
              .where(F.col("impressions") >= cfg.min_exposure))
    got = read_table(spark, C.GROUP_CTR, wh).where(F.col("product_id") == pid).select(
        "creative_id", "group_id", "impressions", "clicks")
    assert sorted(map(tuple, got.collect())) == sorted(map(tuple, expect.select(*got.columns).collect()))
    # each group's centroid is the mean e_u|t of its viewers (the shards' sums over the counts)
    from osmf_core.models.embedder import PAAGEmbedder
    rows = ug.join(read_table(spark, C.USERS, wh), "user_id").toPandas()
    eut = PAAGEmbedder(paag_model, wh)(rows[list(C.USER_ATTRIBUTES)].to_numpy(np.int64), rows["product_id"].to_numpy())
    for g in groups:
        members = eut[(rows["group_id"] == g["group_id"]).to_numpy()]
        np.testing.assert_allclose(g["centroid"], members.mean(0), atol=1e-4)
        assert np.isfinite(g["points"]).all()
