"""The Spark side of the run ledger gaip.runs (see osmf_core.data.runs for what it guarantees).

  publish(spark, warehouse, stage, run_date, tables)   the regroup's last commit
  roll_back_unpublished(spark, warehouse)              the regroup's first step: a killed run's commits
                                                       are undone before a new run publishes anything
  published_in(spark, warehouse, run_date)             runs.published, with the ledger read through Spark
  read_published(spark, table, warehouse, run)         a table as one run sees it
"""
from __future__ import annotations

import datetime as dt
import uuid

from delta.tables import DeltaTable

from osmf_core.data import catalog as C
from osmf_core.data.runs import REGROUP, REGROUP_TABLES, Run, complete_rows, published
from osmf_core.data.store import append_rows, current_version, read_table, table_exists


def publish(spark, warehouse: str, stage: str, run_date: dt.date, tables=REGROUP_TABLES) -> Run:
    """Append the ledger row of a run whose tables are all committed: its last write."""
    versions = {t.fqn: current_version(spark, t, warehouse) for t in tables}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    run_id = f"{run_date.isoformat()}/{now:%Y%m%dT%H%M%S}/{uuid.uuid4().hex[:8]}"
    row = [(run_id, run_date, stage, "complete", now, versions)]
    append_rows(spark.createDataFrame(row, C.RUNS.schema), C.RUNS, warehouse)
    return Run(run_date.isoformat(), versions, run_id)


def spark_ledger(spark, warehouse: str) -> list[dict]:
    """The ledger's complete rows read through Spark ([] when there is no ledger yet)."""
    if not table_exists(spark, C.RUNS, warehouse):
        return []
    return complete_rows(r.asDict() for r in read_table(spark, C.RUNS, warehouse).collect())


def published_in(spark, warehouse: str, run_date: str = "", stage: str = REGROUP) -> Run:
    """`runs.published`, reading the ledger through Spark."""
    return published(warehouse, run_date, stage, ledger=spark_ledger(spark, warehouse))


def roll_back_unpublished(spark, warehouse: str, stage: str = REGROUP, tables=REGROUP_TABLES) -> list[str]:
    """Undo what a killed run committed: every table goes back to its version in the newest complete run
    (Delta RESTORE), or is emptied when no complete run has it yet. Called first by the regroup, so that a
    later run never publishes a killed run's commits along with its own. Returns the tables changed."""
    rows = [r for r in spark_ledger(spark, warehouse) if r["stage"] == stage]
    published_at = rows[-1]["versions"] if rows else {}
    undone = []
    for t in tables:
        if not table_exists(spark, t, warehouse):
            continue
        table = DeltaTable.forPath(spark, t.path(warehouse))
        if t.fqn in published_at:
            if current_version(spark, t, warehouse) > published_at[t.fqn]:
                table.restoreToVersion(published_at[t.fqn])
                undone.append(t.fqn)
        elif not table.toDF().isEmpty():
            table.delete()
            undone.append(t.fqn)
    return undone


def read_published(spark, t: C.Table, warehouse: str, run: Run):
    """Table `t` as the run sees it (all its run dates, at the run's version)."""
    return read_table(spark, t, warehouse, version=run.version(t))
