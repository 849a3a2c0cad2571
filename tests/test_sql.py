"""Every query of sql/queries/ against a small hand-made warehouse with known answers."""
from __future__ import annotations

import datetime as dt

import pytest

from osmf_core.data import catalog as C
from osmf_core.data import queries
from osmf_core.data import ledger, runs
from osmf_core.data.store import write_table

D6, D7 = dt.date(2026, 11, 6), dt.date(2026, 11, 7)
UG = "run_date date, product_id long, user_id long, group_id int"


def _groups(spark, rows):
    """rows: (run_date, product, group, k_star, silhouette, size)."""
    return spark.createDataFrame(
        [(d, p, g, k, s, n, [0.0], [[0.0]], [50]) for d, p, g, k, s, n in rows],
        "run_date date, product_id long, group_id int, k_star int, silhouette double, size long, "
        "centroid array<float>, points array<array<float>>, percentiles array<int>")


def _publish(spark, wh, day):
    ledger.publish(spark, wh, runs.REGROUP, day, tables=(C.GROUPS, C.GROUP_CTR, C.USER_GROUPS))


@pytest.fixture(scope="module")
def sql_wh(spark, tmp_path_factory):
    """Two regroup runs, 11-06 then 11-07, each published to the run ledger after its writes."""
    wh = str(tmp_path_factory.mktemp("sql_wh"))
    write_table(spark.createDataFrame(
        [(1, "shoes", "a", b"", b""), (2, "shoes", "b", b"", b""), (3, "smartphone", "c", b"", b"")],
        "product_id long, category string, title string, image binary, mask binary"), C.PRODUCTS, wh)
    groups = [
        (D6, 1, 0, 2, 0.5, 3), (D6, 1, 1, 2, 0.5, 3),
        (D7, 1, 0, 2, 0.6, 4), (D7, 1, 1, 2, 0.6, 3),
        (D7, 2, 0, 3, 0.4, 40), (D7, 2, 1, 3, 0.4, 40), (D7, 2, 2, 3, 0.4, 40),
        (D7, 3, 0, 2, 0.7, 50), (D7, 3, 1, 2, 0.7, 50)]
    ctr = [  # run, product, creative, group, impressions, clicks
        (D6, 1, 10, 0, 100, 50),
        (D7, 1, 10, 0, 100, 10), (D7, 1, 10, 1, 100, 2), (D7, 1, 11, 0, 100, 5), (D7, 1, 11, 1, 100, 8),
        (D7, 1, 12, 0, 200, 20),  # ties creative 10 in group 0 at 0.10 with more impressions: best
        (D7, 2, 20, 0, 50, 5), (D7, 2, 21, 1, 50, 1), (D7, 2, 20, 2, 60, 3),
        (D7, 3, 30, 0, 100, 3), (D7, 3, 30, 1, 100, 3)]
    ug = {D6: (0, 0, 0, 1, 1, 1), D7: (1, 1, 0, 0, 0, 0, 1)}  # user 3 moved to the other group, user 7 is new
    for day in (D6, D7):
        where = f"run_date = '{day.isoformat()}'"
        write_table(_groups(spark, [g for g in groups if g[0] == day]), C.GROUPS, wh, replace_where=where)
        write_table(spark.createDataFrame([(*r, r[5] / r[4]) for r in ctr if r[0] == day],
                                          "run_date date, product_id long, creative_id long, group_id int, "
                                          "impressions long, clicks long, ctr double"), C.GROUP_CTR, wh,
                    replace_where=where)
        write_table(spark.createDataFrame([(day, 1, u + 1, g) for u, g in enumerate(ug[day])], UG), C.USER_GROUPS,
                    wh, replace_where=where)
        _publish(spark, wh, day)
    return wh


def _rows(spark, name, wh, **kw):
    return [tuple(r) for r in queries.run_query(spark, name, wh, **kw).collect()]


EXPECTED = {
    "best_creative_per_group": (
        {}, ["product_id", "group_id", "creative_id", "impressions", "clicks", "ctr"],
        [(1, 0, 12, 200, 20, 0.10), (1, 1, 11, 100, 8, 0.08), (2, 0, 20, 50, 5, 0.10), (2, 1, 21, 50, 1, 0.02),
         (2, 2, 20, 60, 3, 0.05), (3, 0, 30, 100, 3, 0.03), (3, 1, 30, 100, 3, 0.03)]),
    "group_distinctness": (
        {}, ["product_id", "k_star", "silhouette", "users", "best_creatives", "mean_ctr_gap"],
        [(1, 2, 0.6, 7, 2, (0.08 + 0.03) / 2), (2, 3, 0.4, 120, 2, 0.05), (3, 2, 0.7, 100, 1, 0.0)]),
    "ctr_by_group_over_time": (
        {}, ["run_date", "product_id", "group_id", "creatives", "impressions", "clicks", "ctr"],
        [(D6, 1, 0, 1, 100, 50, 0.5), (D7, 1, 0, 3, 400, 35, 35 / 400), (D7, 1, 1, 2, 200, 10, 0.05),
         (D7, 2, 0, 1, 50, 5, 0.1), (D7, 2, 1, 1, 50, 1, 0.02), (D7, 2, 2, 1, 60, 3, 0.05),
         (D7, 3, 0, 1, 100, 3, 0.03), (D7, 3, 1, 1, 100, 3, 0.03)]),
    "groups_per_category": (
        {}, ["run_date", "category", "products", "groups", "groups_per_product", "mean_silhouette", "user_rows"],
        [(D6, "shoes", 1, 2, 2.0, 0.5, 6), (D7, "shoes", 2, 5, 2.5, (0.6 * 2 + 0.4 * 3) / 5, 127),
         (D7, "smartphone", 1, 2, 2.0, 0.7, 100)]),
    "ctr_spread_between_groups": (
        {"top_n": 2}, ["product_id", "creative_id", "groups", "min_ctr", "max_ctr", "spread"],
        [(1, 10, 2, 0.02, 0.10, 0.08), (2, 20, 2, 0.05, 0.10, 0.05)]),
    "group_changes_since_last_run": (
        {}, ["product_id", "groups_now", "groups_before", "users_now", "users_before", "stayed", "kept_together"],
        [(1, 2, 2, 7, 6, 6, 5 / 6)]),
}


def test_every_query_has_a_known_answer():
    assert set(queries.names()) == set(EXPECTED)
    for name in queries.names():
        assert "-- grain:" in queries.text(name), f"{name}.sql states no grain"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_query_answers(spark, sql_wh, name):
    kw, columns, want = EXPECTED[name]
    df = queries.run_query(spark, name, sql_wh, **kw)
    assert df.columns == columns
    got = [tuple(r) for r in df.collect()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == pytest.approx(w), (name, g, w)


def test_time_travel_compares_a_rerun_with_what_it_replaced(spark, sql_wh):
    """Rerunning 11-07 with the old partition restored makes "before" the first 11-07 write."""
    write_table(spark.createDataFrame([(D7, 1, u, g) for u, g in zip(range(1, 8), (0, 0, 0, 1, 1, 1, 1))], UG),
                C.USER_GROUPS, sql_wh, replace_where="run_date = '2026-11-07'")
    _publish(spark, sql_wh, D7)
    # before = the first 11-07 write (1,1,0,0,0,0,1), now (0,0,0,1,1,1,1): now-group 0 = users 1,2 (were 1)
    # and 3 (was 0), now-group 1 = users 4,5,6 (were 0) and 7 (was 1): 2 + 3 of 7 kept together
    assert _rows(spark, "group_changes_since_last_run", sql_wh) == [(1, 2, 2, 7, 7, 7, pytest.approx(5 / 7))]


def test_parameters_and_names_fail_clearly(spark, sql_wh):
    with pytest.raises(KeyError, match="no query 'nope'"):
        queries.text("nope")
    with pytest.raises(ValueError, match="no value for missing_one"):
        queries.render("select ${missing_one}", {})
    assert _rows(spark, "best_creative_per_group", sql_wh, run_date="2026-11-06") == [
        (1, 0, 10, 100, 50, pytest.approx(0.5))]
