"""Read and write catalog tables as Delta: schema enforced, reruns replace their partitions."""
from __future__ import annotations

import os
import signal

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from osmf_core.data.config import ConfigError
from osmf_core.data.reader import made_by
from osmf_core.data.schema import Table


class SchemaMismatch(ValueError):
    """A DataFrame does not carry the columns its catalog table declares."""


def conform(df: DataFrame, t: Table) -> DataFrame:
    """Columns of `t` in catalog order, cast to the declared types; missing or extra columns are an error."""
    have, want = set(df.columns), set(t.column_names)
    if have != want:
        raise SchemaMismatch(
            f"{t.fqn}: missing columns {sorted(want - have)}, unexpected columns {sorted(have - want)}")
    out = []
    for c in t.columns:
        src = df.schema[c.name].dataType
        if src != c.dtype and not _safe_cast(src, c.dtype):
            raise SchemaMismatch(f"{t.fqn}.{c.name}: declared {c.dtype.simpleString()}, got {src.simpleString()}")
        same = src.simpleString() == c.dtype.simpleString()  # equal up to nullability of elements
        out.append(F.col(c.name) if same else F.col(c.name).cast(c.dtype).alias(c.name))
    return df.select(out)


def _safe_cast(src, dst) -> bool:
    """Casts between numeric types (ANSI mode, set by build_spark, makes an overflow an error), arrays of
    them, and nulls."""
    if isinstance(src, T.NullType):
        return True
    if isinstance(src, T.ArrayType) and isinstance(dst, T.ArrayType):
        return _safe_cast(src.elementType, dst.elementType)
    numeric = (T.IntegralType, T.FractionalType)
    return isinstance(src, numeric) and isinstance(dst, numeric)


def ensure_table(spark: SparkSession, t: Table, warehouse: str) -> None:
    """Create the Delta table with its declared schema (NOT NULL constraints included) if it is absent.

    An existing table is left as it is: Delta itself refuses a write whose columns do not fit it.
    """
    if table_exists(spark, t, warehouse):
        _add_new_columns(spark, t, warehouse)
        return
    (DeltaTable.createIfNotExists(spark)
     .location(t.path(warehouse))
     .addColumns(t.schema)
     .partitionedBy(*t.partition_by)
     .comment(t.comment or t.grain)
     .execute())


def _add_new_columns(spark: SparkSession, t: Table, warehouse: str) -> None:
    """A table made by an older release gains the nullable columns the catalog added since; a missing column
    that is not nullable is a one-line error (its old rows would have no value for it)."""
    have = set(spark.read.format("delta").load(t.path(warehouse)).columns)
    new = [c for c in t.columns if c.name not in have]
    if not new:
        return
    strict = [c.name for c in new if not c.nullable]
    if strict:
        raise ConfigError(f"{t.fqn} at {t.path(warehouse)} lacks the columns {strict} of this release, which "
                          f"cannot be added to old rows: rebuild the table (remove {t.path(warehouse)} and rerun "
                          f"{made_by(t)})")
    cols = ", ".join(f"`{c.name}` {c.dtype.simpleString()}" + (f" comment '{c.comment}'" if c.comment else "")
                     for c in new)
    spark.sql(f"alter table delta.`{t.path(warehouse)}` add columns ({cols})")


def write_table(df: DataFrame, t: Table, warehouse: str, replace_where: str | None = None) -> None:
    """Write `df` to table `t`, replacing what this run wrote before.

    Unpartitioned tables are replaced whole. Partitioned tables have exactly the partitions present in
    `df` replaced (a rerun of a run date never duplicates rows), unless `replace_where` names the slice
    to replace, which also clears it when `df` is empty.
    """
    df = conform(df, t)
    spark = df.sparkSession
    ensure_table(spark, t, warehouse)
    writer = df.write.format("delta").mode("overwrite")
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    elif t.partition_by:
        writer = writer.option("partitionOverwriteMode", "dynamic")
    writer.save(t.path(warehouse))
    _failpoint(t)


def append_rows(df: DataFrame, t: Table, warehouse: str) -> None:
    """Append `df` to `t` in one commit (ledgers: every row is an event of its own)."""
    df = conform(df, t)
    ensure_table(df.sparkSession, t, warehouse)
    df.write.format("delta").mode("append").save(t.path(warehouse))
    _failpoint(t)


def merge_rows(df: DataFrame, t: Table, warehouse: str, update: bool = False) -> dict:
    """MERGE `df` into `t` on the table's key, in one Delta commit: rows with a new key are inserted; a row
    whose key is already there is updated when `update` (dimension tables: only when a column changed), else
    left untouched. No existing row is ever removed. Returns the commit's counts: inserted, updated."""
    df = conform(df, t)
    spark = df.sparkSession
    ensure_table(spark, t, warehouse)
    on = " and ".join(f"t.`{k}` = s.`{k}`" for k in t.key)
    merge = DeltaTable.forPath(spark, t.path(warehouse)).alias("t").merge(df.alias("s"), on)
    others = [c for c in t.column_names if c not in t.key]
    if update and others:
        merge = merge.whenMatchedUpdateAll(condition=" or ".join(f"not (t.`{c}` <=> s.`{c}`)" for c in others))
    got = merge.whenNotMatchedInsertAll().execute().first()  # this commit's own counts
    _failpoint(t)
    return {"inserted": int(got["num_inserted_rows"] or 0) if got else 0,
            "updated": int(got["num_updated_rows"] or 0) if got else 0}


def current_version(spark: SparkSession, t: Table, warehouse: str) -> int:
    """The Delta version of the table's latest commit."""
    return int(DeltaTable.forPath(spark, t.path(warehouse)).history(1).first()["version"])


def table_keys(spark: SparkSession, t: Table, warehouse: str) -> DataFrame | None:
    """The key columns of every row of `t` (None when the table does not exist yet)."""
    if not table_exists(spark, t, warehouse):
        return None
    return read_table(spark, t, warehouse).select(*t.key)


FAILPOINT = "OSMF_KILL_AFTER_WRITE"  # fault injection (tests): kill -9 this process after writing that table


def _failpoint(t: Table) -> None:
    if os.environ.get(FAILPOINT) == t.fqn:
        os.kill(os.getpid(), signal.SIGKILL)


def read_table(spark: SparkSession, t: Table, warehouse: str, version: int | None = None) -> DataFrame:
    """The table as a DataFrame (optionally at an older Delta version)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(t.path(warehouse))


def local_frame(spark: SparkSession, columns: dict, schema: str) -> DataFrame:
    """A small frame of the driver's columns (name -> values), planned as a local relation through Arrow
    (createDataFrame of a list of tuples runs Python tasks to unpickle it, in a job of its own per use)."""
    import pandas as pd
    return spark.createDataFrame(pd.DataFrame(columns), schema)


def checksum(df: DataFrame) -> tuple[int, int]:
    """(row count, order-independent hash sum of all columns): equal for equal tables."""
    row = df.select(F.count("*").alias("n"),
                    F.sum(F.xxhash64(*df.columns).cast("decimal(38,0)")).alias("h")).first()
    return int(row["n"]), int(row["h"] or 0)


def table_exists(spark: SparkSession, t: Table, warehouse: str) -> bool:
    """A Delta table with at least one commit (a creation killed before its first commit leaves a log folder
    that is not a table yet)."""
    if not DeltaTable.isDeltaTable(spark, t.path(warehouse)):
        return False
    try:
        DeltaTable.forPath(spark, t.path(warehouse))
    except AnalysisException:
        return False
    return True


def exists_in(spark: SparkSession, warehouse: str):
    """`reader.require_tables`' test of existence, asked through Spark (a Spark job's own view of the log)."""
    return lambda t: table_exists(spark, t, warehouse)


def register_tables(spark: SparkSession, tables, warehouse: str) -> list[str]:
    """Make existing tables queryable by name (raw.users, ...) in this session's catalog, pointing at this
    warehouse (a name registered earlier for another warehouse is re-pointed)."""
    done = []
    if "://" not in warehouse:  # a relative location would resolve against Spark's own warehouse dir
        warehouse = os.path.abspath(warehouse)
    for t in tables:
        here = table_exists(spark, t, warehouse)
        if spark.catalog.tableExists(t.fqn):  # named earlier, perhaps for another warehouse: re-point
            if spark.catalog.getTable(t.fqn).tableType == "EXTERNAL":
                spark.sql(f"drop table {t.fqn}")  # external: only the name goes, never the data
            elif here:
                raise ValueError(f"{t.fqn} is a managed table of this session, not one of a warehouse")
        if here:
            spark.sql(f"create schema if not exists {t.layer}")
            spark.sql(f"create table {t.fqn} using delta location '{t.path(warehouse)}'")
            done.append(t.fqn)
    return done
