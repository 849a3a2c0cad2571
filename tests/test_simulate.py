"""The simulated world in Spark: tables, determinism, reruns, an independent reader, the hidden truth."""
import dataclasses

import numpy as np
import pandas as pd
from deltalake import DeltaTable, QueryBuilder

from osmf_core.data import catalog as C
from osmf_core.world import images
from osmf_core.world import model as world
from osmf_core.world import styles
from osmf_core.world.simulate import SimulateConfig, impressions_df, simulate_world, users_df
from osmf_core.world.truth import read_manifest, read_world
from osmf_core.data.store import checksum, read_table
from osmf_core.world.truth import Truth

RAW = (C.USERS, C.PRODUCTS, C.CREATIVES, C.IMPRESSIONS)


def test_tables_have_the_world_sizes(spark, tiny_world, tiny_cfg):
    wh, result = tiny_world
    size = tiny_cfg.size
    n = {t.fqn: read_table(spark, t, wh).count() for t in RAW}
    assert n["raw.users"] == size.users and n["raw.products"] == size.products
    assert 3 * size.products <= n["raw.creatives"] <= 20 * size.products
    assert 0.9 < n["raw.impressions"] / (size.users * size.impressions_per_user) < 1.1
    assert result.summary["rows"] == n
    dates = {r.event_date.isoformat() for r in read_table(spark, C.IMPRESSIONS, wh).select("event_date").distinct().collect()}
    assert dates == {"2026-11-01", "2026-11-02", "2026-11-03"}
    assert read_manifest(wh) == (tiny_cfg.seed, size)
    assert read_world(wh) == (tiny_cfg.seed, size, tiny_cfg.params)  # the preset and knobs the truth rebuilds from
    assert Truth.from_warehouse(wh).spec.split_name(0) == "gender"  # the tiny world is v1: smartphones by gender


def test_loader_quarantines_the_injected_rows_and_loses_none(spark, tiny_world, tiny_cfg):
    wh, result = tiny_world
    reports = {r.table: r for r in result.reports}
    clean = impressions_df(spark, tiny_cfg).count()
    imp = reports["raw.impressions"]
    assert imp.accepted == clean and imp.rows_in == clean + imp.rejected and imp.rejected > 0
    assert set(imp.reasons) == {"null:user_id", "unknown_user", "unknown_creative", "invalid_clicked",
                                "duplicate:impression_id"}
    assert set(reports["raw.users"].reasons) <= {"null:user_id", "out_of_range:age", "duplicate:user_id"}
    rejects = read_table(spark, C.REJECTS, wh)
    for r in result.reports:
        assert r.rows_in == r.accepted + r.rejected
        assert rejects.where(f"source = '{r.table}'").count() == r.rejected


def test_generation_does_not_depend_on_partitioning(spark):
    size = dataclasses.replace(world.WorldSize(), users=2 * world.USER_BLOCK + 100, products=28,
                               impressions_per_user=3.0)
    a = SimulateConfig(seed=3, size=size, partitions=1)
    b = dataclasses.replace(a, partitions=3)
    assert checksum(impressions_df(spark, a)) == checksum(impressions_df(spark, b))
    assert checksum(users_df(spark, a)) == checksum(users_df(spark, b))
    assert checksum(users_df(spark, a)) != checksum(users_df(spark, dataclasses.replace(a, seed=4)))


def test_rerun_with_the_same_seed_gives_the_same_tables_without_duplicates(spark, tiny_world, tiny_cfg):
    wh, _ = tiny_world
    tables = (*RAW, C.REJECTS)
    before = {t.fqn: checksum(read_table(spark, t, wh)) for t in tables}
    simulate_world(spark, dataclasses.replace(tiny_cfg, partitions=1), wh, log=lambda *_: None)
    after = {t.fqn: checksum(read_table(spark, t, wh)) for t in tables}
    assert after == before


def test_deltalake_reads_what_spark_wrote(spark, tiny_world):
    wh, _ = tiny_world
    spark_side = read_table(spark, C.IMPRESSIONS, wh).groupBy().agg({"*": "count", "clicked": "sum"}).first()
    res = (QueryBuilder().register("i", DeltaTable(C.IMPRESSIONS.path(wh)))
           .execute("select count(*) as n, sum(clicked) as k from i").read_all())
    assert res.column("n").to_pylist() == [spark_side[0]] and res.column("k").to_pylist() == [spark_side[1]]
    users = DeltaTable(C.USERS.path(wh))
    assert [f.name for f in users.schema().fields] == C.USERS.column_names


def test_images_show_the_product_and_prompts_name_the_style(spark, tiny_world, tiny_cfg):
    wh, _ = tiny_world
    product = read_table(spark, C.PRODUCTS, wh).orderBy("product_id").first()
    img, mask = images.from_png(product.image), images.from_png(product.mask)
    assert img.shape == (32, 32, 3) and mask.shape == (32, 32) and set(np.unique(mask)) == {0, 255}
    assert product.title.split()[-2] != "" and product.category == world.CATEGORY_NAMES[0]
    truth = Truth(tiny_cfg.seed, tiny_cfg.size.products, tiny_cfg.params)
    creatives = read_table(spark, C.CREATIVES, wh).select("creative_id", "prompt").limit(50).collect()
    for c in creatives:
        np.testing.assert_array_equal(styles.parse_style(c.prompt), truth.creative_style(c.creative_id))


def test_observed_segment_ctr_agrees_with_the_hidden_truth(spark, tiny_world, tiny_cfg):
    wh, _ = tiny_world
    rows = (read_table(spark, C.IMPRESSIONS, wh).join(read_table(spark, C.USERS, wh), "user_id")
            .select("creative_id", "clicked", "user_id", *C.USER_ATTRIBUTES).toPandas())
    truth = Truth(tiny_cfg.seed, tiny_cfg.size.products, tiny_cfg.params)
    pid = rows["creative_id"].to_numpy() // world.CREATIVE_STRIDE
    rows["category"] = truth.products.category[pid]
    rows["segment"] = world.segment_of(truth.spec, rows["category"].to_numpy(), rows)
    rows["p"] = truth.click_probability(rows, rows["creative_id"])

    def z_scores(frame):
        g = frame.groupby(["category", "segment"]).agg(
            clicks=("clicked", "sum"), expected=("p", "sum"), var=("p", lambda p: (p * (1 - p)).sum()))
        return (g["clicks"] - g["expected"]) / np.sqrt(g["var"])

    z = z_scores(rows)
    assert len(z) == int(truth.spec.n_segments.sum())
    assert np.abs(z).max() < 4.5 and (z ** 2).mean() < 2.0  # within sampling error
    # the same check catches a wrong truth: clicks scored against another seed's preferences
    wrong = Truth(tiny_cfg.seed + 1, tiny_cfg.size.products, tiny_cfg.params)
    rows["p"] = wrong.click_probability(rows, rows["creative_id"])
    assert (z_scores(rows) ** 2).mean() > 2.0
    assert 0.01 <= rows["clicked"].mean() <= 0.02
    assert isinstance(rows, pd.DataFrame)
