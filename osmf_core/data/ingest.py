"""The loader of raw logs: rows that break the schema or the rules go to gaip.rejects with a reason.

Pure DataFrame -> DataFrame rules (`label_*`) plus `load`, which writes both sides and checks that
rows in = rows accepted + rows rejected. Used for real logs and for the simulated ones alike.

How accepted rows reach their table (`load`'s mode):
  append   event tables (raw.impressions): a Delta MERGE on the key inserts rows with new keys and never
           rewrites or removes a row already there; a row whose key is in the table is rejected as
           duplicate:<key>, as is a second row of one key in the batch. Re-loading a file adds nothing.
  upsert   dimension tables (raw.users, raw.products, raw.creatives): MERGE on the key; a changed row is
           updated, a new one inserted, rows absent from the file stay.
  replace  the simulator's world: the tables are written whole (the world is regenerated from its seed).

Rules besides the schema's (null, type): ids are not negative, an integer column takes no fractional value
(1.5 is rejected, 2.0 is 2), event dates lie in the load's `DateWindow`, clicked is 0 or 1, references are known, and a
line the reader could not parse is rejected as `unparsable`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from osmf_core.data import catalog as C
from osmf_core.data.store import merge_rows, read_table, table_keys, write_table

REASON = "_reject_reason"
CORRUPT = "_corrupt_record"  # the column Spark's JSON and CSV readers put an unparsable line in
MODES = ("append", "upsert", "replace")
MODE_OF = {C.IMPRESSIONS.fqn: "append", C.USERS.fqn: "upsert", C.PRODUCTS.fqn: "upsert",
           C.CREATIVES.fqn: "upsert"}


@dataclass(frozen=True)
class DateWindow:
    """Event dates a load accepts: from `horizon_days` before the run date to `future_days` after it."""
    run_date: dt.date
    horizon_days: int = 90
    future_days: int = 1

    def __post_init__(self):
        if self.horizon_days < 0 or self.future_days < 0:
            raise ValueError(f"horizon_days and future_days must be >= 0, got {self.horizon_days}, "
                             f"{self.future_days}")

    @property
    def first(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.horizon_days)

    @property
    def last(self) -> dt.date:
        return self.run_date + dt.timedelta(days=self.future_days)


class LoadMismatch(RuntimeError):
    """Rows were lost or invented between input and output of a load."""


def _first_failure(rules: list[tuple]) -> F.Column:
    """The reason of the first rule whose condition holds, else null."""
    expr = F.lit(None).cast("string")
    for cond, reason in reversed(rules):
        expr = F.when(cond, reason if isinstance(reason, F.Column) else F.lit(reason)).otherwise(expr)
    return expr


def _cast(raw: F.Column, dtype: T.DataType) -> F.Column:
    """`raw` as `dtype`, null when it does not fit. Integer columns take whole numbers only: 2.0 is 2, 1.5 and
    1e30 are null (a plain cast would truncate 1.5 to 1)."""
    if not isinstance(dtype, T.IntegralType):
        return raw.try_cast(dtype)
    exact = raw.try_cast(T.DecimalType(38, 18))  # no rounding on the way, unlike a double above 2^53
    fractional = exact.isNotNull() & (exact != F.floor(exact))
    return (F.when(fractional, F.lit(None).cast(dtype))
            .otherwise(F.coalesce(raw.try_cast(dtype), exact.try_cast(dtype))))


def _typed(df: DataFrame, t: C.Table) -> tuple[DataFrame, list[tuple]]:
    """Cast every declared column; rules for unparsable lines, missing, null and ill-typed values, negative ids
    (ids are counted from 0, as the platform's and the simulator's are)."""
    missing = [c for c in t.column_names if c not in df.columns]
    if missing:
        raise ValueError(f"input for {t.fqn} lacks columns {missing}; expected {t.column_names}")
    rules = []
    if CORRUPT in df.columns:
        rules.append((F.col(CORRUPT).isNotNull(), "unparsable"))
    out = df
    for c in t.columns:
        raw = F.col(c.name)
        typed = _cast(raw, c.dtype)
        if not c.nullable:
            rules.append((raw.isNull(), f"null:{c.name}"))
        rules.append((raw.isNotNull() & typed.isNull(), f"bad_type:{c.name}"))
        if c.name.endswith("_id") and isinstance(c.dtype, T.IntegralType):
            rules.append((typed < 0, f"out_of_range:{c.name}"))
        out = out.withColumn(f"_t_{c.name}", typed)
    return out, rules


def _in_table(df: DataFrame, t: C.Table, existing: DataFrame | None) -> tuple[DataFrame, list[tuple]]:
    """A rule for rows whose key is already in the table (event tables): duplicate:<key>."""
    if existing is None:
        return df, []
    known = (existing.select(*[F.col(k).alias(f"_known_{k}") for k in t.key]).distinct()
             .withColumn("_in_table", F.lit(True)))
    on = [df[f"_t_{k}"] == known[f"_known_{k}"] for k in t.key]
    df = df.join(known, on, "left").drop(*[f"_known_{k}" for k in t.key])
    return df, [(F.col("_in_table").isNotNull(), f"duplicate:{','.join(t.key)}")]


def _finish(df: DataFrame, t: C.Table, input_cols: list[str], rules: list[tuple],
            existing: DataFrame | None = None) -> DataFrame:
    """Attach the first failed rule (a key already in the table last), then mark all but one row per key of
    the batch as duplicates: the same reason, duplicate:<key>, for a copy in the batch or in the table."""
    df, in_table = _in_table(df, t, existing)
    df = df.withColumn(REASON, _first_failure(rules + in_table))
    df = df.withColumn("_row_json", F.to_json(F.struct(*[F.col(c) for c in input_cols])))
    key = [F.col(f"_t_{k}") for k in t.key]
    w = Window.partitionBy(*key).orderBy(F.col(REASON).isNotNull(), F.col("_row_json"))
    dup = F.when(F.col(REASON).isNull() & (F.row_number().over(w) > 1), F.lit(f"duplicate:{','.join(t.key)}"))
    df = df.withColumn(REASON, F.coalesce(F.col(REASON), dup))
    return df.select(*[F.col(f"_t_{c}").alias(c) for c in t.column_names], REASON, "_row_json")


def label_rows(df: DataFrame, t: C.Table) -> DataFrame:
    """Rows of any catalog table with a reject reason from the schema rules alone (nulls, types, ids,
    duplicates)."""
    typed, rules = _typed(df, t)
    return _finish(typed, t, df.columns, rules)


def label_users(df: DataFrame) -> DataFrame:
    """raw.users rows with a reject reason column (null = accepted)."""
    t = C.USERS
    typed, rules = _typed(df, t)
    for attr, (card, _) in C.USER_ATTRIBUTES.items():
        v = F.col(f"_t_{attr}")
        rules.append(((v < 0) | (v >= card), f"out_of_range:{attr}"))
    return _finish(typed, t, df.columns, rules)


def label_creatives(df: DataFrame, products: DataFrame) -> DataFrame:
    """raw.creatives rows with a reject reason: unknown product among the rules."""
    t = C.CREATIVES
    typed, rules = _typed(df, t)
    known = products.select(F.col("product_id").alias("_known_product")).distinct()
    typed = typed.join(known, typed["_t_product_id"] == known["_known_product"], "left")
    rules.append((F.col("_t_product_id").isNotNull() & F.col("_known_product").isNull(), "unknown_product"))
    return _finish(typed, t, df.columns, rules)


def label_impressions(df: DataFrame, users: DataFrame, creatives: DataFrame, window: DateWindow,
                      existing: DataFrame | None = None) -> DataFrame:
    """raw.impressions rows with a reject reason: event date outside the window, bad click flag, unknown user
    or creative, duplicates in the batch or (with `existing`, the ids already loaded) in the table."""
    t = C.IMPRESSIONS
    typed, rules = _typed(df, t)
    day = F.col("_t_event_date")
    rules.append(((day < F.lit(window.first)) | (day > F.lit(window.last)), "out_of_range:event_date"))
    rules.append((~F.col("_t_clicked").isin(0, 1), "invalid_clicked"))
    known_u = users.select(F.col("user_id").alias("_known_user")).distinct()
    known_c = creatives.select(F.col("creative_id").alias("_known_creative")).distinct()
    typed = (typed.join(known_u, typed["_t_user_id"] == known_u["_known_user"], "left")
             .join(known_c, typed["_t_creative_id"] == known_c["_known_creative"], "left"))
    rules.append((F.col("_t_user_id").isNotNull() & F.col("_known_user").isNull(), "unknown_user"))
    rules.append((F.col("_t_creative_id").isNotNull() & F.col("_known_creative").isNull(), "unknown_creative"))
    return _finish(typed, t, df.columns, rules, existing)


@dataclass
class LoadReport:
    table: str
    rows_in: int
    accepted: int
    rejected: int
    reasons: dict = field(default_factory=dict)
    mode: str = "replace"
    inserted: int = 0  # accepted rows with a new key
    updated: int = 0  # accepted rows that changed an existing row (upsert)

    def line(self) -> str:
        why = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        how = "" if self.mode == "replace" else f"; {self.inserted} inserted, {self.updated} updated"
        return (f"{self.table}: {self.rows_in} rows in = {self.accepted} accepted + {self.rejected} "
                f"rejected ({why}){how}")


def load(raw: DataFrame, labeled: DataFrame, t: C.Table, warehouse: str, run_date: dt.date,
         mode: str = "replace", load_id: str = "") -> LoadReport:
    """Write the accepted rows of `labeled` to `t` (by `mode`, see the module docstring) and the rest to
    gaip.rejects under `load_id`; check nothing is lost. A rerun of one load replaces its rejects (replace
    mode: every reject of the run date and table)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    load_id = load_id or f"{mode}:{t.fqn}:{run_date.isoformat()}"
    rows_in = raw.count()
    if mode == "replace":  # the labels do not read the table written: a recomputation gives the same rows
        labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
    else:  # recomputed after the MERGE, rows just inserted would read as duplicates of themselves, so the
        # lineage is cut (a lost block fails the load instead of miscounting it)
        labeled = labeled.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[REASON]: r["n"] for r in labeled.groupBy(REASON).agg(F.count("*").alias("n")).collect()}
        accepted = counts.pop(None, 0)
        report = LoadReport(t.fqn, rows_in, accepted, sum(counts.values()), counts, mode)
        if report.accepted + report.rejected != rows_in:
            raise LoadMismatch(f"{report.line()} does not add up: "
                               f"{rows_in - report.accepted - report.rejected} rows unaccounted for")
        rejects = labeled.where(F.col(REASON).isNotNull()).select(
            F.lit(run_date).alias("run_date"), F.lit(t.fqn).alias("source"), F.lit(load_id).alias("load_id"),
            F.col(REASON).alias("reason"), F.col("_row_json").alias("row_json"))
        where = f"run_date = '{run_date.isoformat()}' and source = '{t.fqn}'"
        if mode != "replace":
            where += f" and load_id = '{load_id}'"
        # rejects first: a load that dies before its accepted rows commit is simply run again (the rerun
        # replaces these rejects); the other order would leave accepted rows without their load's rejects
        write_table(rejects, C.REJECTS, warehouse, replace_where=where)
        good = labeled.where(F.col(REASON).isNull()).select(*t.column_names)
        if mode == "replace":
            write_table(good, t, warehouse)
            report.inserted = accepted
        else:
            got = merge_rows(good, t, warehouse, update=mode == "upsert")
            report.inserted, report.updated = got["inserted"], got["updated"]
            if report.inserted + report.updated > accepted or (mode == "append" and report.inserted != accepted):
                raise LoadMismatch(f"{report.line()}: the MERGE inserted {got['inserted']} and updated "
                                   f"{got['updated']} of {accepted} accepted rows")
    finally:
        labeled.unpersist()
    return report


def ingest(raw: DataFrame, fqn: str, warehouse: str, run_date: dt.date, window: DateWindow | None = None,
           load_id: str = "") -> LoadReport:
    """Load external rows for a raw table: label them by that table's rules, then `load` them by the table's
    mode (MODE_OF): impressions append by key, dimension tables upsert.

    Impressions are checked against the users and creatives already in the warehouse and against the ids
    already loaded, creatives against the products.
    """
    spark = raw.sparkSession
    if fqn not in MODE_OF:
        raise ValueError(f"ingest loads the raw tables only, not {fqn!r}")
    t = C.table(fqn)
    if fqn == C.USERS.fqn:
        labeled = label_users(raw)
    elif fqn == C.PRODUCTS.fqn:
        labeled = label_rows(raw, C.PRODUCTS)
    elif fqn == C.CREATIVES.fqn:
        labeled = label_creatives(raw, read_table(spark, C.PRODUCTS, warehouse))
    else:
        labeled = label_impressions(raw, read_table(spark, C.USERS, warehouse),
                                    read_table(spark, C.CREATIVES, warehouse), window or DateWindow(run_date),
                                    existing=table_keys(spark, t, warehouse))
    return load(raw, labeled, t, warehouse, run_date, MODE_OF[fqn], load_id)
