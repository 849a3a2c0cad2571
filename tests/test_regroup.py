"""The nightly regroup job on the tiny world: GAIP tables, nothing lost, features, CTRs, pairs, reruns."""
import datetime as dt
import re

import numpy as np
import pytest
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.grouping.regroup import regroup
from osmf_core.data.store import checksum, read_table

from conftest import REGROUP as CFG  # noqa: F401  (other tests import CFG from here)


@pytest.fixture(scope="module")
def regrouped(gaip_wh):
    return gaip_wh


def _run_date(spark, wh, t):
    return read_table(spark, t, wh)


def test_every_viewer_of_a_grouped_product_gets_exactly_one_group(spark, regrouped):
    wh, cfg, summary = regrouped
    imps = read_table(spark, C.IMPRESSIONS, wh).join(read_table(spark, C.CREATIVES, wh), "creative_id")
    viewers = imps.select("product_id", "user_id").distinct()
    per_product = viewers.groupBy("product_id").count()
    eligible = per_product.where(F.col("count") >= cfg.min_users)
    ug = read_table(spark, C.USER_GROUPS, wh)
    assert ug.count() == viewers.join(eligible.select("product_id"), "product_id").count() == summary["rows_embedded"]
    assert ug.select("product_id", "user_id").distinct().count() == ug.count()
    assert summary["products_grouped"] + summary["products_skipped_few_viewers"] == per_product.count()
    assert summary["products_skipped_few_viewers"] == per_product.where(F.col("count") < cfg.min_users).count()


def test_groups_are_large_enough_and_carry_their_features(spark, regrouped):
    wh, cfg, _ = regrouped
    groups = read_table(spark, C.GROUPS, wh).toPandas()
    sizes = read_table(spark, C.USER_GROUPS, wh).groupBy("product_id", "group_id").count().toPandas()
    merged = groups.merge(sizes, on=["product_id", "group_id"])
    assert len(merged) == len(groups) and (merged["size"] == merged["count"]).all()
    assert (groups["size"] >= cfg.min_group_size).all()
    for _, g in groups.groupby("product_id"):
        assert sorted(g["group_id"]) == list(range(len(g))) and (g["k_star"] == len(g)).all()
        assert 1 <= len(g) <= cfg.k_max and g["silhouette"].between(-1, 1).all()
    d = len(groups["centroid"].iloc[0])
    assert all(len(p) == len(cfg.percentiles) and all(len(v) == d for v in p) for p in groups["points"])
    assert all(list(p) == list(cfg.percentiles) for p in groups["percentiles"])
    assert groups["k_star"].gt(1).mean() > 0.5  # most products split into several groups


def test_group_ctr_counts_the_impressions_of_each_group(spark, regrouped):
    wh, cfg, summary = regrouped
    imps = read_table(spark, C.IMPRESSIONS, wh).join(read_table(spark, C.CREATIVES, wh), "creative_id")
    ug = read_table(spark, C.USER_GROUPS, wh)
    expect = (imps.join(ug, ["product_id", "user_id"]).groupBy("product_id", "creative_id", "group_id")
              .agg(F.count("*").alias("n"), F.sum("clicked").alias("k")).toPandas())
    got = read_table(spark, C.GROUP_CTR, wh).toPandas()
    both = expect.merge(got, on=["product_id", "creative_id", "group_id"], how="left")
    kept = both["n"] >= cfg.min_exposure
    assert both["impressions"].notna().sum() == kept.sum() == len(got)  # exactly the rows exposed enough
    assert (both.loc[kept, "impressions"] == both.loc[kept, "n"]).all()
    assert (both.loc[kept, "clicks"] == both.loc[kept, "k"]).all()
    np.testing.assert_allclose(got["ctr"], got["clicks"] / got["impressions"])
    assert summary["group_ctr_rows_low_exposure"] == (~kept).sum()


def test_pairs_follow_the_exposure_and_ratio_rule(spark, regrouped):
    wh, cfg, _ = regrouped
    ctr = read_table(spark, C.GROUP_CTR, wh).toPandas()
    pairs = read_table(spark, C.PAIRS, wh).toPandas()
    assert len(pairs) > 0
    assert (pairs["creative_a"] < pairs["creative_b"]).all()
    assert (pairs["label"] == (pairs["ctr_a"] > pairs["ctr_b"]).astype(int)).all()
    hi, lo = pairs[["ctr_a", "ctr_b"]].max(1), pairs[["ctr_a", "ctr_b"]].min(1)
    assert ((hi > lo) & (hi >= cfg.pair_ctr_ratio * lo)).all()
    exposed = ctr[ctr["impressions"] >= cfg.pair_min_exposure]
    keys = set(zip(exposed["product_id"], exposed["group_id"], exposed["creative_id"]))
    assert all((p, g, a) in keys and (p, g, b) in keys
               for p, g, a, b in pairs[["product_id", "group_id", "creative_a", "creative_b"]].itertuples(index=False))
    # every qualifying pair is there: count them independently
    n = 0
    for _, g in exposed.groupby(["product_id", "group_id"]):
        c = g["ctr"].to_numpy()
        h, l_ = np.maximum.outer(c, c), np.minimum.outer(c, c)
        n += int(np.triu((h > l_) & (h >= cfg.pair_ctr_ratio * l_), 1).sum())
    assert len(pairs) == n


def test_a_rerun_of_the_same_date_replaces_its_rows(spark, regrouped):
    wh, cfg, summary = regrouped
    tables = (C.GROUPS, C.USER_GROUPS, C.GROUP_CTR, C.PAIRS)
    before = [checksum(read_table(spark, t, wh)) for t in tables]
    regroup(spark, cfg, wh, log=lambda *_: None)
    assert [checksum(read_table(spark, t, wh)) for t in tables] == before
    metrics = read_table(spark, C.METRICS, wh).where(F.col("stage") == "regroup")
    assert metrics.count() == metrics.select("name").distinct().count()
    assert metrics.where(F.col("name") == "rows_embedded").first()["value"] == summary["rows_embedded"]


@pytest.mark.parametrize("flags, message", [
    (["--k-range", "5-2"], "K range 5-2: need 2 <= k_min <= k_max"),
    (["--run-date", "2026-13-01"], "--run-date must be a date YYYY-MM-DD"),
    (["--run-date", "2099-01-01"], "is after the last day of raw.impressions"),
    (["--run-date", "2000-01-01"], "empty window 1999-12-26..2000-01-01"),
    (["--model", "no/such/model.pt"], "--model no/such/model.pt does not exist"),
    (["--model", "RUNG_UT"], "is the PAAG rung 'I+U+T+UT': --cluster-on profile needs the full model"),
    (["--warehouse", "EMPTY"], "raw.impressions: no Delta table at"),
    (["--conf", "spark.x"], "--conf takes KEY=VALUE"),
])
def test_a_bad_configuration_stops_in_one_line_before_any_work(spark, paag_wh, paag_model, tmp_path, capsys,
                                                              flags, message):
    from jobs.regroup import main
    flags = [str(tmp_path) if f == "EMPTY" else _rung_model(paag_model, tmp_path) if f == "RUNG_UT" else f
             for f in flags]
    base = ["--warehouse", paag_wh, "--model", paag_model, "--master", "local[2]", "--window-days", "7"]
    versions = {t.fqn: _version(spark, paag_wh, t) for t in (C.GROUPS, C.USER_GROUPS, C.METRICS)}
    capsys.readouterr()
    assert main(base + flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("regroup: ") and message in err, err
    assert versions == {t.fqn: _version(spark, paag_wh, t) for t in (C.GROUPS, C.USER_GROUPS, C.METRICS)}


def _rung_model(path, tmp_path) -> str:
    """A saved PAAG like `path` but of the rung without e_u|c."""
    import torch
    from osmf_core.models.paag import PAAG, PAAGConfig
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = PAAG(PAAGConfig(**{**blob["model"], "rung": "I+U+T+UT"}))
    out = tmp_path / "ut.pt"
    torch.save({**blob, "model": model.cfg.to_dict(), "state_dict": model.state_dict()}, out)
    return str(out)


def _version(spark, wh, t):
    from delta.tables import DeltaTable
    from osmf_core.data.store import table_exists
    return DeltaTable.forPath(spark, t.path(wh)).history(1).first()["version"] if table_exists(spark, t, wh) else None


@pytest.mark.parametrize("with_profile", [True, False])
def test_the_clustered_space_is_the_profile_and_group_features_stay_in_e_u_t_space(with_profile):
    """Rows whose e_u|t splits one way and whose preference profile splits another: the groups follow the
    profile when there is one (cluster_on = profile), e_u|t otherwise; centroids are e_u|t means. The
    profile is computed on the rows in (product, user) order whatever order they arrive in."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score
    from osmf_core.grouping.batch import cluster_frame
    from osmf_core.grouping.regroup import RegroupConfig
    rng = np.random.default_rng(0)
    n = 200
    by_eut, by_profile = np.arange(n) // 100, np.arange(n) % 2
    eut = (by_eut[:, None] * 6.0 + rng.normal(size=(n, 8))).astype(np.float32)
    profile = (by_profile[:, None] * 6.0 + rng.normal(size=(n, 3))).astype(np.float32)
    pdf = pd.DataFrame({"product_id": 7, "user_id": np.arange(n), "embedding": list(eut)})

    def profile_of(e, pids):  # rows come sorted by (product, user): here, user id order
        np.testing.assert_array_equal(e, eut)
        return profile

    out = cluster_frame(pdf.sample(frac=1.0, random_state=0), RegroupConfig(**CFG),
                        profile_of if with_profile else None)
    users = out[out["kind"] == "users"]  # one row: the product's viewers and their groups
    assert len(users) == 1 and sorted(users["user_ids"].iloc[0]) == list(range(n))
    labels = pd.Series(users["group_ids"].iloc[0], index=users["user_ids"].iloc[0]).sort_index().to_numpy(int)
    assert adjusted_rand_score(by_profile if with_profile else by_eut, labels) == 1.0
    groups = out[out["kind"] == "group"]
    assert len(groups) == 2
    for _, g in groups.iterrows():
        np.testing.assert_allclose(g["centroid"], eut[labels == g["group_id"]].mean(0), atol=1e-5)
        assert all(len(p) == eut.shape[1] for p in g["points"])


def test_the_default_regroup_clusters_profiles_and_publishes_e_u_t_centroids(spark, regrouped):
    from osmf_core.models.embedder import PAAGEmbedder
    wh, cfg, summary = regrouped
    assert cfg.cluster_on == "profile" and summary["config"]["cluster_on"] == "profile"
    ug = read_table(spark, C.USER_GROUPS, wh).join(read_table(spark, C.USERS, wh), "user_id").toPandas()
    groups = read_table(spark, C.GROUPS, wh).toPandas()
    pid = ug["product_id"].value_counts().index[0]
    rows = ug[ug["product_id"] == pid]
    eut = PAAGEmbedder(cfg.model, wh)(rows[list(C.USER_ATTRIBUTES)].to_numpy(np.int64), rows["product_id"].to_numpy())
    for _, g in groups[groups["product_id"] == pid].iterrows():
        np.testing.assert_allclose(g["centroid"], eut[(rows["group_id"] == g["group_id"]).to_numpy()].mean(0),
                                   atol=1e-4)


def test_products_are_packed_into_even_buckets_and_the_buckets_dealt_evenly_to_the_tasks(spark):
    """pack: the largest product first, each into the lightest bucket (longest processing time first);
    bucket_labels: bucket b's value goes to task b mod tasks under the hash partitioning the job uses."""
    from pyspark.sql import functions as F
    from osmf_core.grouping.buckets import bucket_labels, pack
    sizes = {1: 50, 2: 40, 3: 30, 4: 20, 5: 10, 6: 10}
    assert pack(sizes, 2) == {1: 0, 2: 1, 3: 1, 4: 0, 5: 0, 6: 1}  # loads 80 and 80
    rng = np.random.default_rng(0)
    heavy = {i: int(s) for i, s in enumerate(rng.pareto(1.2, 2000) * 100 + 10)}
    loads = np.bincount(list(pack(heavy, 16).values()), weights=[heavy[i] for i in pack(heavy, 16)], minlength=16)
    assert loads.max() - loads.mean() <= max(heavy.values())  # within one product of the mean
    for n, tasks in ((7, 2), (32, 2), (40, 8)):
        labels = bucket_labels(spark, n, tasks)
        assert len(set(labels)) == n
        got = (spark.createDataFrame([(v, b) for b, v in enumerate(labels)], "bucket int, b int")
               .repartition(tasks, "bucket").select("b", F.spark_partition_id().alias("task")).collect())
        assert sorted((r["b"], r["task"]) for r in got) == [(b, b % tasks) for b in range(n)]


def test_a_call_embeds_from_its_own_products_features_as_from_the_whole_bank(spark, regrouped):
    """A clustering call receives the feature rows of its products only (batch.feature_rows, read for the
    window's products and cogrouped): the same rows as the whole catalogue's for those products; its bank holds
    those products and their creatives, and gives the e_u|t and preference profiles that
    the warehouse's whole bank gives. A product whose features did not come is a one-line KeyError."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from osmf_core.grouping.batch import bank_of, embed_table, feature_rows, project
    from osmf_core.models.embedder import PAAGEmbedder
    wh, cfg, _ = regrouped
    whole = PAAGEmbedder(cfg.model, wh, profiles=True)
    two = [int(p) for p in whole.bank.product_ids[[0, -1]]]
    feats = feature_rows(spark, cfg, wh, products=two).toArrow()  # as the regroup reads them: these products only
    key = lambda t: sorted(zip(*(t.column(c).to_pylist() for c in t.column_names)))  # noqa: E731
    assert key(feats) == key(feature_rows(spark, cfg, wh).where(F.col("product_id").isin(two)).toArrow())
    bank = bank_of(feats)
    creatives = read_table(spark, C.CREATIVES, wh).where(F.col("product_id").isin(two)).toPandas()
    assert bank.product_ids.tolist() == sorted(two)
    assert bank.creative_ids.tolist() == sorted(creatives["creative_id"])
    assert dict(zip(bank.creative_ids, bank.creative_products)) == dict(zip(creatives["creative_id"],
                                                                           creatives["product_id"]))
    users = read_table(spark, C.USERS, wh).orderBy("user_id").limit(40).toPandas()
    rows = users.assign(product_id=np.repeat(two, 20)[::-1].copy())  # unsorted: the call sorts
    table = pa.Table.from_pandas(rows[["product_id", "user_id", *C.USER_ATTRIBUTES]], preserve_index=False)
    e = embed_table(table, feats, cfg)
    ordered = rows.iloc[e.order]
    eut = whole(ordered[list(C.USER_ATTRIBUTES)].to_numpy(np.int64), ordered["product_id"].to_numpy())
    np.testing.assert_allclose(e.eut, eut, atol=1e-5)
    prof = whole.profile(eut, ordered["product_id"].to_numpy())
    width = creatives.groupby("product_id").size().max()
    assert e.space.shape == (40, width)
    np.testing.assert_allclose(e.space, prof[:, :width], atol=1e-5)
    assert not prof[:, width:].any()
    assert list(project(iter([pa.RecordBatch.from_pylist([], schema=feats.schema)]), cfg)) == []  # empty: none
    with pytest.raises(KeyError, match=f"no features for products \\[{max(two)}\\]"):
        embed_table(table, feats.filter(pc.not_equal(feats["product_id"], max(two))), cfg)


def test_the_projection_in_steps_gives_the_rows_of_one_step(spark, regrouped):
    """batch.project projects a batch `step_floats` input floats at a time, one output batch per step, so
    its copies do not grow with the batch: the same rows, bit for bit, as the whole batch at once."""
    import pyarrow as pa
    from osmf_core.grouping.batch import encoder_rows, project
    wh, cfg, _ = regrouped
    raw = encoder_rows(spark, cfg, wh).toArrow()
    batch = raw.combine_chunks().to_batches()[0]
    assert batch.num_rows == raw.num_rows > 10 and not raw.column("is_title").to_numpy().all()  # titles, images
    whole = list(project(iter([batch]), cfg, step_floats=1 << 40))
    one_row = list(project(iter([batch]), cfg, step_floats=1))  # below one row's floats: a row a step
    few = list(project(iter([batch]), cfg, step_floats=len(batch.column("features").values) // 5))
    assert len(whole) == 1 and len(one_row) == batch.num_rows and 5 <= len(few) < batch.num_rows
    for steps in (one_row, few):
        assert pa.Table.from_batches(steps).equals(pa.Table.from_batches(whole))


def test_a_cogroup_refuses_keys_of_two_types(spark):
    """An int key and a long key hash apart, yet Spark would take the two sides as co-partitioned."""
    from osmf_core.grouping.batch import cogroup
    ints = spark.createDataFrame([(1, 2)], "shard int, x int")
    longs = spark.createDataFrame([(1, 2)], "shard long, y int")
    with pytest.raises(TypeError, match="cogroup key shard: IntegerType\\(\\) in the rows, LongType\\(\\)"):
        cogroup(ints, longs, ["shard"])
    assert cogroup(ints, ints.withColumnRenamed("x", "y"), ["shard"]) is not None


DAEMON_PROBE = """
import json, os, sys
import pyarrow as pa
from osmf_core.data.config import SparkSettings
from osmf_core.data.spark import build_spark
from osmf_core.grouping.regroup import SPARK_CONF
conf = SPARK_CONF if sys.argv[2] == "job" else {}
spark = build_spark(SparkSettings(master="local[1]", warehouse=sys.argv[1], conf=conf, show_progress=False))
def seen():  # before the task runs a line of its own: torch imported already? the worker's daemon
    return pa.table({"torch": ["torch" in sys.modules], "daemon": [os.getppid()]})
df = spark.range(1).selectExpr("id as k")
a = df.mapInArrow(lambda batches: (seen().to_batches()[0] for _ in batches), "torch boolean, daemon long").collect()
b = df.groupBy("k").cogroup(df.groupBy("k")).applyInArrow(lambda x, y: seen(), "torch boolean, daemon long").collect()
jvm = spark.sparkContext._jvm  # the options the driver's JVM (local mode's executor too) runs with
vm = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
    jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
opts = {n: vm.getVMOption(n).getValue() for n in ("UseParallelGC", "Tier4InvocationThreshold", "Tier4BackEdgeThreshold")}
print("PROBE " + json.dumps([[[r["torch"], r["daemon"]] for r in a + b], opts]))
spark.stop()
"""


@pytest.mark.parametrize("conf", ["job", "spark"])
def test_the_regroups_spark_settings_reach_its_workers_and_its_jvm(tmp_path, conf):
    """With the regroup's SPARK_CONF the projection's mapInArrow task and the clustering's cogrouped task run in
    workers of one daemon (grouping.daemon), and each finds torch imported before it ran, and the JVM collects
    garbage with the throughput collector and hands methods to C2 at ten times the default heat (JVM_OPTIONS);
    with Spark's own settings, torch is not there and the JIT thresholds are the JVM's defaults."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "SPARK_HOME")}
    env.update(PYTHONPATH=str(repo), SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run([sys.executable, "-c", DAEMON_PROBE, str(tmp_path / "wh"), conf], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [(mapped, mapped_daemon), (grouped, grouped_daemon)], opts = json.loads(
        next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))[len("PROBE "):])
    if conf == "job":
        assert mapped and grouped and mapped_daemon == grouped_daemon
        assert opts == {"UseParallelGC": "true", "Tier4InvocationThreshold": "50000", "Tier4BackEdgeThreshold": "400000"}
    else:
        assert not mapped and not grouped
        assert (opts["Tier4InvocationThreshold"], opts["Tier4BackEdgeThreshold"]) == ("5000", "40000")


def test_more_rows_than_rows_per_task_make_more_tasks_with_the_same_calls_and_tables(spark, regrouped, paag_wh,
                                                                                   tmp_path):
    """task_count: the cores, or the least multiple of them holding the rows at rows_per_task a task (a
    task's sort of its rows stays bounded). Dealt to twice the tasks, the same calls write the same tables.
    The viewers' aggregation takes its partitions the same way from the shuffle partitions and the window's
    impressions, shuffles the impressions as they are and aggregates them after the shuffle only."""
    import shutil
    from dataclasses import replace
    from osmf_core.grouping.buckets import task_count
    assert [task_count(r, 2, 1_000_000) for r in (0, 1_895_892, 2_000_000, 2_000_001, 6_322_433)] == [2, 2, 2, 4, 8]
    assert [task_count(r, 3, 10) for r in (30, 31, 61)] == [3, 6, 9]
    _, cfg, summary = regrouped
    rows = int(summary["rows_embedded"])
    one = replace(cfg, tasks=2, rows_per_call=rows // 8 + 1)  # 8 calls (buckets) in 2 tasks
    runs, partitions, before = [], 2, spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))  # the viewers' tasks are a multiple of it
    try:
        for name, c in (("one", one), ("more", replace(one, rows_per_task=rows // 4 + 1))):  # the same calls, 4 tasks
            wh = str(tmp_path / name)
            shutil.copytree(paag_wh, wh, ignore=shutil.ignore_patterns("gaip"))
            runs.append((regroup(spark, c, wh, log=lambda *_: None), [checksum(read_table(spark, t, wh)) for t in
                                                                      (C.GROUPS, C.USER_GROUPS, C.GROUP_CTR, C.PAIRS)]))
        from osmf_core.grouping.regroup import viewers
        end = dt.date.fromisoformat(runs[0][0]["run_date"])
        seen, n = viewers(spark, paag_wh, end, end, 1)  # one day's impressions at one a task
        plan = seen._jdf.queryExecution().executedPlan().toString()
        seen.unpersist()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    (a, sums_a), (b, sums_b) = runs
    assert (a["cluster_tasks"], b["cluster_tasks"]) == (2, 4)
    assert a["cluster_calls"] == b["cluster_calls"] == 8
    window = read_table(spark, C.IMPRESSIONS, paag_wh).where(
        F.col("event_date").between(F.lit(end - dt.timedelta(days=cfg.window_days - 1)), F.lit(end))).count()
    assert a["viewer_tasks"] == partitions  # the tiny world's impressions fit a task of 1,000,000
    assert b["viewer_tasks"] == task_count(window, partitions, rows // 4 + 1) > partitions
    assert sums_a == sums_b
    # the viewers' impressions are shuffled once, by user, into that many partitions, and partially
    # aggregated after that shuffle, not before it (the physical plan, top down)
    shuffles = re.findall(r"Exchange hashpartitioning\(user_id#\d+L, (\d+)\)", plan)
    assert n > partitions and shuffles == [str(n)] and len(re.findall(r"Exchange hashpartitioning", plan)) == 1
    assert plan.index("partial_collect_list") < plan.index("Exchange hashpartitioning")
    # both sides of the cogroup are shuffled into that many partitions (the physical plan; nothing runs)
    from osmf_core.grouping.batch import FEATURE_SCHEMA
    from osmf_core.grouping.regroup import cluster
    attrs = ", ".join(f"{c} int" for c in C.USER_ATTRIBUTES)
    rows_df = spark.createDataFrame([(1, 10, [5], [False], *[0] * len(C.USER_ATTRIBUTES))],
                                    f"product_id long, user_id long, shown_creatives array<long>, "
                                    f"shown_clicked array<boolean>, {attrs}")
    feats = spark.createDataFrame([(1, True, 0, 1, 2, [0.0, 0.0])], FEATURE_SCHEMA)
    plan = cluster(lambda keep: rows_df.join(F.broadcast(keep), "product_id"), cfg, {1: 1}, feats,
                   4)._jdf.queryExecution().toString()
    assert re.findall(r"hashpartitioning\(bucket#\d+, (\d+)\)", plan) == ["4", "4"]


def test_the_users_attributes_join_the_viewers_in_their_partitions_and_are_never_broadcast(spark, paag_wh):
    """with_attributes: the users are shuffled into the viewers' partitions (by user) and hashed per partition;
    the cached viewers are read as they are, with no second shuffle, and the users are not broadcast, though
    the tiny world's are far under Spark's broadcast threshold (a broadcast is a hash of every user in the
    heap). Its rows are those of a broadcast join."""
    from osmf_core.grouping.regroup import viewers, with_attributes
    end = read_table(spark, C.IMPRESSIONS, paag_wh).agg(F.max("event_date")).first()[0]
    seen, n = viewers(spark, paag_wh, end - dt.timedelta(days=6), end, 1_000)
    try:
        rows = with_attributes(seen, paag_wh)
        got = checksum(rows)  # runs it: the plan below is the one adaptive execution settled on
        plan = rows._jdf.queryExecution().executedPlan().toString()
        users = read_table(spark, C.USERS, paag_wh).select("user_id", *C.USER_ATTRIBUTES)
        assert got == checksum(seen.join(F.broadcast(users), "user_id")) and rows.count() == seen.count() > 0
        # with `keep`: one product's viewers (its column joined), filtered before the users' join, still unshuffled
        product = seen.select("product_id").first()[0]
        keep = spark.createDataFrame([(product, 7)], "product_id long, bucket int")
        kept = with_attributes(seen, paag_wh, keep)
        want = seen.where(F.col("product_id") == product).join(F.broadcast(users), "user_id").withColumn(
            "bucket", F.lit(7))
        assert checksum(kept.select(*want.columns)) == checksum(want) and 0 < kept.count() < seen.count()
        kept_plan = kept._jdf.queryExecution().executedPlan().toString()
        kept_join = kept_plan[kept_plan.index("ShuffledHashJoin"):]
        below = kept_join[:kept_join.index("InMemoryTableScan")]
        assert "BroadcastHashJoin" in below and "Exchange hashpartitioning(user_id" not in below
    finally:
        seen.unpersist()
    attribute = next(iter(C.USER_ATTRIBUTES))
    assert re.search(r"ShuffledHashJoin \[user_id#\d+L\], \[user_id#\d+L\], Inner, BuildRight", plan)  # users hashed
    assert not re.search(r"BroadcastHashJoin \[user_id#", plan)  # (the viewers' own broadcast is the creatives')
    join = plan[plan.index("ShuffledHashJoin"):]
    assert "Exchange" not in join[:join.index("InMemoryTableScan")]  # the cached viewers, not shuffled again
    # the users' scan, shuffled by user into the viewers' partitions (the viewers' own shuffle scans impressions)
    pieces = re.split(r"Exchange hashpartitioning\(user_id#\d+L, (\d+)\)", plan)
    into = [count for count, after in zip(pieces[1::2], pieces[2::2])
            if "Scan" in (below := after.split("Exchange")[0]) and attribute in below]
    assert into and set(into) == {str(n)} and n > 2
