"""The raw-log loader: every broken row lands in gaip.rejects with the right reason, none is lost."""
import datetime as dt
import json

import pytest

from osmf_core.data import catalog as C
from osmf_core.data.ingest import ingest
from osmf_core.data.store import read_table

RUN = dt.date(2026, 11, 7)
ATTRS = list(C.USER_ATTRIBUTES)


def _user(uid, **over):
    row = {"user_id": uid, **{a: 1 for a in ATTRS}}
    row.update(over)
    return row


def _json_input(spark, tmp_path, name, rows):
    """Rows as a folder of JSON lines, read back with every field as text: what a landing zone holds."""
    path = tmp_path / name
    path.mkdir()
    (path / "part-0.json").write_text("\n".join(json.dumps(r) for r in rows))
    return spark.read.schema(", ".join(f"{k} string" for k in rows[0])).json(str(path))


@pytest.fixture(scope="module")
def loaded(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    wh = str(tmp / "wh")
    users = [_user(1), _user(2), _user(3, age=5),
             _user(None), _user(4, age=13), _user(5, gender="x"), _user(3, age=6), _user(6, child_age=-1)]
    products = [{"product_id": 10, "category": "shoes", "title": "t", "image": "", "mask": ""}]
    creatives = [{"creative_id": 320, "product_id": 10, "prompt": "p", "image": ""},
                 {"creative_id": 321, "product_id": 99, "prompt": "p", "image": ""}]
    imp = lambda i, u=1, c=320, k=0, d="2026-11-06": {  # noqa: E731
        "event_date": d, "impression_id": i, "user_id": u, "creative_id": c, "clicked": k}
    impressions = [imp(1), imp(2, k=1), imp(3, u=2),
                   imp(4, u=999), imp(5, c=321), imp(6, k=3), imp(7, d=None), imp(2, u=3, k=1),
                   imp(8, d="2026-13-45"), imp(None)]
    reports = {}
    for fqn, rows in [("raw.users", users), ("raw.products", products), ("raw.creatives", creatives),
                      ("raw.impressions", impressions)]:
        raw = _json_input(spark, tmp, fqn, rows)
        if fqn in ("raw.products", "raw.creatives"):
            raw = raw.withColumn("image", raw["image"].cast("binary"))
            if fqn == "raw.products":
                raw = raw.withColumn("mask", raw["mask"].cast("binary"))
        reports[fqn] = ingest(raw, fqn, wh, RUN)
    return wh, reports


def test_every_row_is_accepted_or_rejected_with_its_reason(loaded):
    _, reports = loaded
    u, c, i = reports["raw.users"], reports["raw.creatives"], reports["raw.impressions"]
    assert (u.rows_in, u.accepted) == (8, 3)
    assert u.reasons == {"null:user_id": 1, "out_of_range:age": 1, "bad_type:gender": 1,
                         "duplicate:user_id": 1, "out_of_range:child_age": 1}
    assert (c.rows_in, c.accepted, c.reasons) == (2, 1, {"unknown_product": 1})
    assert (i.rows_in, i.accepted) == (10, 3)
    assert i.reasons == {"unknown_user": 1, "unknown_creative": 1, "invalid_clicked": 1,
                         "null:event_date": 1, "duplicate:impression_id": 1, "bad_type:event_date": 1,
                         "null:impression_id": 1}
    for r in reports.values():
        assert r.rows_in == r.accepted + r.rejected


def test_tables_hold_exactly_the_accepted_and_rejected_rows(spark, loaded):
    wh, reports = loaded
    assert sorted(r.user_id for r in read_table(spark, C.USERS, wh).collect()) == [1, 2, 3]
    kept = read_table(spark, C.IMPRESSIONS, wh).orderBy("impression_id").collect()
    assert [(r.impression_id, r.user_id, r.clicked) for r in kept] == [(1, 1, 0), (2, 1, 1), (3, 2, 0)]
    rejects = read_table(spark, C.REJECTS, wh)
    by_source = {r.source: r["count"] for r in rejects.groupBy("source").count().collect()}
    assert by_source == {fqn: r.rejected for fqn, r in reports.items() if r.rejected}
    bad_age = rejects.where("reason = 'out_of_range:age'").first()
    assert json.loads(bad_age.row_json) == {k: str(v) for k, v in _user(4, age=13).items()}
    assert bad_age.run_date == RUN


def test_a_duplicate_keeps_one_row_and_quarantines_the_other(spark, loaded):
    wh, _ = loaded
    dup = read_table(spark, C.REJECTS, wh).where("reason = 'duplicate:user_id'").first()
    kept = read_table(spark, C.USERS, wh).where("user_id = 3").collect()
    assert len(kept) == 1 and {kept[0].age, int(json.loads(dup.row_json)["age"])} == {5, 6}


def test_a_rerun_replaces_its_rejects(spark, loaded, tmp_path):
    wh, reports = loaded
    raw = _json_input(spark, tmp_path, "again", [_user(7), _user(8, age=77)])
    report = ingest(raw, "raw.users", wh, RUN)
    assert (report.accepted, report.rejected) == (1, 1)
    rejects = read_table(spark, C.REJECTS, wh)
    assert rejects.where("source = 'raw.users'").count() == 1  # the earlier 5 were replaced
    assert rejects.where("source = 'raw.impressions'").count() == reports["raw.impressions"].rejected


def test_input_missing_a_column_is_a_clear_error(spark, tmp_path):
    raw = _json_input(spark, tmp_path, "short", [{"user_id": 1, "age": 2}])
    with pytest.raises(ValueError, match="lacks columns"):
        ingest(raw, "raw.users", str(tmp_path / "wh"), RUN)
