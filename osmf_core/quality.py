"""The loader of raw logs: rows that break the schema or the rules go to gaip.rejects with a reason.

Pure DataFrame -> DataFrame rules (`label_*`) plus `load`, which writes both sides and checks that
rows in = rows accepted + rows rejected. Used for real logs and for the simulated ones alike.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from osmf_core import catalog as C
from osmf_core.store import read_table, write_table

REASON = "_reject_reason"


class LoadMismatch(RuntimeError):
    """Rows were lost or invented between input and output of a load."""


def _first_failure(rules: list[tuple]) -> F.Column:
    """The reason of the first rule whose condition holds, else null."""
    expr = F.lit(None).cast("string")
    for cond, reason in reversed(rules):
        expr = F.when(cond, reason if isinstance(reason, F.Column) else F.lit(reason)).otherwise(expr)
    return expr


def _typed(df: DataFrame, t: C.Table) -> tuple[DataFrame, list[tuple]]:
    """Cast every declared column with try_cast; rules for missing, null and unparsable values."""
    missing = [c for c in t.column_names if c not in df.columns]
    if missing:
        raise ValueError(f"input for {t.fqn} lacks columns {missing}; expected {t.column_names}")
    rules = []
    out = df
    for c in t.columns:
        raw = F.col(c.name)
        typed = raw.try_cast(c.dtype)
        if not c.nullable:
            rules.append((raw.isNull(), f"null:{c.name}"))
        rules.append((raw.isNotNull() & typed.isNull(), f"bad_type:{c.name}"))
        out = out.withColumn(f"_t_{c.name}", typed)
    return out, rules


def _finish(df: DataFrame, t: C.Table, input_cols: list[str], rules: list[tuple]) -> DataFrame:
    """Attach the first failed rule, then mark all but one row per key as duplicates."""
    df = df.withColumn(REASON, _first_failure(rules))
    df = df.withColumn("_row_json", F.to_json(F.struct(*[F.col(c) for c in input_cols])))
    key = [F.col(f"_t_{k}") for k in t.key]
    w = Window.partitionBy(*key).orderBy(F.col(REASON).isNotNull(), F.col("_row_json"))
    dup = F.when(F.col(REASON).isNull() & (F.row_number().over(w) > 1), F.lit(f"duplicate:{','.join(t.key)}"))
    df = df.withColumn(REASON, F.coalesce(F.col(REASON), dup))
    return df.select(*[F.col(f"_t_{c}").alias(c) for c in t.column_names], REASON, "_row_json")


def label_rows(df: DataFrame, t: C.Table) -> DataFrame:
    """Rows of any catalog table with a reject reason from the schema rules alone (nulls, types, duplicates)."""
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


def label_impressions(df: DataFrame, users: DataFrame, creatives: DataFrame) -> DataFrame:
    """raw.impressions rows with a reject reason: unknown user or creative, bad click flag, duplicates."""
    t = C.IMPRESSIONS
    typed, rules = _typed(df, t)
    rules.append((~F.col("_t_clicked").isin(0, 1), "invalid_clicked"))
    known_u = users.select(F.col("user_id").alias("_known_user")).distinct()
    known_c = creatives.select(F.col("creative_id").alias("_known_creative")).distinct()
    typed = (typed.join(known_u, typed["_t_user_id"] == known_u["_known_user"], "left")
             .join(known_c, typed["_t_creative_id"] == known_c["_known_creative"], "left"))
    rules.append((F.col("_t_user_id").isNotNull() & F.col("_known_user").isNull(), "unknown_user"))
    rules.append((F.col("_t_creative_id").isNotNull() & F.col("_known_creative").isNull(), "unknown_creative"))
    return _finish(typed, t, df.columns, rules)


@dataclass
class LoadReport:
    table: str
    rows_in: int
    accepted: int
    rejected: int
    reasons: dict = field(default_factory=dict)

    def line(self) -> str:
        why = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (f"{self.table}: {self.rows_in} rows in = {self.accepted} accepted + {self.rejected} "
                f"rejected ({why})")


def load(raw: DataFrame, labeled: DataFrame, t: C.Table, warehouse: str, run_date: dt.date) -> LoadReport:
    """Write the accepted rows of `labeled` to `t` and the rest to gaip.rejects; check nothing is lost."""
    rows_in = raw.count()
    labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[REASON]: r["n"] for r in labeled.groupBy(REASON).agg(F.count("*").alias("n")).collect()}
        accepted = counts.pop(None, 0)
        report = LoadReport(t.fqn, rows_in, accepted, sum(counts.values()), counts)
        if report.accepted + report.rejected != rows_in:
            raise LoadMismatch(f"{report.line()} does not add up: "
                               f"{rows_in - report.accepted - report.rejected} rows unaccounted for")
        write_table(labeled.where(F.col(REASON).isNull()).select(*t.column_names), t, warehouse)
        rejects = labeled.where(F.col(REASON).isNotNull()).select(
            F.lit(run_date).alias("run_date"), F.lit(t.fqn).alias("source"),
            F.col(REASON).alias("reason"), F.col("_row_json").alias("row_json"))
        write_table(rejects, C.REJECTS, warehouse,
                    replace_where=f"run_date = '{run_date.isoformat()}' and source = '{t.fqn}'")
    finally:
        labeled.unpersist()
    return report


def ingest(raw: DataFrame, fqn: str, warehouse: str, run_date: dt.date) -> LoadReport:
    """Load external rows for a raw table: label them by that table's rules, then `load`.

    Impressions are checked against the users and creatives already in the warehouse, creatives
    against the products.
    """
    spark = raw.sparkSession
    if fqn == C.USERS.fqn:
        labeled = label_users(raw)
    elif fqn == C.PRODUCTS.fqn:
        labeled = label_rows(raw, C.PRODUCTS)
    elif fqn == C.CREATIVES.fqn:
        labeled = label_creatives(raw, read_table(spark, C.PRODUCTS, warehouse))
    elif fqn == C.IMPRESSIONS.fqn:
        labeled = label_impressions(raw, read_table(spark, C.USERS, warehouse),
                                    read_table(spark, C.CREATIVES, warehouse))
    else:
        raise ValueError(f"ingest loads the raw tables only, not {fqn!r}")
    return load(raw, labeled, C.table(fqn), warehouse, run_date)
