"""Delta writer and reader: schema enforced, reruns replace, an independent client reads the tables."""
import datetime as dt

import pytest
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import Row

from osmf_core.data import catalog as C
from osmf_core.data.store import SchemaMismatch, checksum, read_table, register_tables, write_table


def _metrics(spark, day, values):
    return spark.createDataFrame(
        [Row(run_date=day, stage="test", name=f"m{i}", value=float(v)) for i, v in enumerate(values)],
        "run_date date, stage string, name string, value double")


def test_schema_round_trips_through_delta(spark, tmp_path):
    wh = str(tmp_path)
    rows = [Row(run_date=dt.date(2026, 11, 1), product_id=7, group_id=0, k_star=2, silhouette=0.4, size=10,
                centroid=[0.5, 1.5], points=[[0.0, 1.0]], percentiles=[15])]
    write_table(spark.createDataFrame(rows), C.GROUPS, wh)
    back = read_table(spark, C.GROUPS, wh)
    assert back.schema.simpleString() == C.GROUPS.schema.simpleString()
    assert [f.nullable for f in back.schema] == [c.nullable for c in C.GROUPS.columns]
    assert back.first().asDict() == rows[0].asDict()


def test_rerun_replaces_its_partition_and_keeps_others(spark, tmp_path):
    wh = str(tmp_path)
    d1, d2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    write_table(_metrics(spark, d1, [1, 2, 3]), C.METRICS, wh)
    write_table(_metrics(spark, d2, [4]), C.METRICS, wh)
    write_table(_metrics(spark, d1, [5, 6]), C.METRICS, wh)  # rerun of d1
    got = sorted((r.run_date, r.value) for r in read_table(spark, C.METRICS, wh).collect())
    assert got == [(d1, 5.0), (d1, 6.0), (d2, 4.0)]
    # an empty rerun clears its slice when the slice is named
    write_table(_metrics(spark, d2, []), C.METRICS, wh, replace_where="run_date = '2026-11-02'")
    assert read_table(spark, C.METRICS, wh).where("run_date = '2026-11-02'").count() == 0


def test_writer_refuses_a_dataframe_off_the_catalog(spark, tmp_path):
    df = _metrics(spark, dt.date(2026, 11, 1), [1])
    with pytest.raises(SchemaMismatch, match="missing columns \\['value'\\]"):
        write_table(df.drop("value"), C.METRICS, str(tmp_path))
    with pytest.raises(SchemaMismatch, match="unexpected columns \\['extra'\\]"):
        write_table(df.withColumn("extra", df.value), C.METRICS, str(tmp_path))
    with pytest.raises(SchemaMismatch, match="declared double, got string"):
        write_table(df.withColumn("value", df.name), C.METRICS, str(tmp_path))


def test_delta_enforces_not_null(spark, tmp_path):
    df = spark.createDataFrame([Row(run_date=dt.date(2026, 11, 1), stage=None, name="m", value=1.0)],
                               "run_date date, stage string, name string, value double")
    with pytest.raises(Exception, match="(?i)null"):
        write_table(df, C.METRICS, str(tmp_path))


def test_spark_table_read_back_by_deltalake(spark, tmp_path):
    wh = str(tmp_path)
    write_table(_metrics(spark, dt.date(2026, 11, 3), [1.5, 2.5, 4.0]), C.METRICS, wh)
    dtab = DeltaTable(C.METRICS.path(wh))
    assert [f.name for f in dtab.schema().fields] == C.METRICS.column_names
    assert dtab.metadata().partition_columns == ["run_date"]
    res = QueryBuilder().register("m", dtab).execute("select count(*) as n, sum(value) as s from m").read_all()
    assert res.column("n").to_pylist() == [3] and res.column("s").to_pylist() == [8.0]


def test_tables_are_queryable_by_name_and_checksums_compare(spark, tmp_path):
    wh = str(tmp_path)
    write_table(_metrics(spark, dt.date(2026, 11, 4), [1, 2]), C.METRICS, wh)
    assert "gaip.metrics" in register_tables(spark, C.TABLES, wh)
    assert spark.sql("select sum(value) s from gaip.metrics where run_date = '2026-11-04'").first().s == 3.0
    a = checksum(read_table(spark, C.METRICS, wh))
    b = checksum(_metrics(spark, dt.date(2026, 11, 4), [2, 1]).select(*C.METRICS.column_names))
    assert a[0] == 2 and a != checksum(_metrics(spark, dt.date(2026, 11, 4), [1, 3]))
    assert a[0] == b[0]


def test_a_local_frame_is_planned_as_a_local_relation_with_its_schema(spark):
    from osmf_core.data.store import local_frame
    df = local_frame(spark, {"product_id": [3, 1], "bucket": [0, 7]}, "product_id long, bucket int")
    assert "LocalTableScan" in df._jdf.queryExecution().executedPlan().toString()
    assert df.schema.simpleString() == "struct<product_id:bigint,bucket:int>"
    assert [tuple(r) for r in df.collect()] == [(3, 0), (1, 7)]
    assert local_frame(spark, {"product_id": []}, "product_id long").count() == 0
