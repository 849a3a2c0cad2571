"""The run ledger gaip.runs: a regroup run becomes visible whole, or not at all.

The regroup commits its tables one by one (each Delta commit is atomic, the set of them is not), then
appends one row to gaip.runs naming the Delta version each table reached. A reader of "the latest run"
takes the run date from the ledger and reads every table at the versions of its newest row. A run killed
between two commits has no ledger row, so readers keep answering from the previous run, consistently
across tables, even when the killed run was a rerun of the same date.

  published(warehouse)                  the latest complete run: run date + table versions
  published(warehouse, run_date="...")  a given complete run date, read at the newest versions
  publish(spark, warehouse, stage, run_date, tables)   the regroup's last commit
  roll_back_unpublished(spark, warehouse)              the regroup's first step: a killed run's commits
                                                       are undone before a new run publishes anything

Readers through Spark (`read_published`) and through the Delta log without Spark (`deltalake`) alike.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from osmf_core import catalog as C
from osmf_core.config import ConfigError

REGROUP = "regroup"
# the tables one regroup run writes together, in the order it commits them
REGROUP_TABLES = (C.USER_GROUPS, C.GROUPS, C.GROUP_CTR, C.PAIRS, C.METRICS)
PUBLISHED = {t.fqn for t in REGROUP_TABLES}


@dataclass(frozen=True)
class Run:
    """What a reader of one run reads: its run date and the Delta version of each of its tables."""
    run_date: str
    versions: dict
    run_id: str = ""
    previous: "Run | None" = None  # the run published before the newest one (for "what changed")
    last_run_date: str = ""  # the run date the newest ledger row wrote

    def version(self, t: C.Table) -> int:
        return int(self.versions[t.fqn])


def publish(spark, warehouse: str, stage: str, run_date: dt.date, tables=REGROUP_TABLES) -> Run:
    """Append the ledger row of a run whose tables are all committed: its last write."""
    from osmf_core.store import append_rows, current_version
    versions = {t.fqn: current_version(spark, t, warehouse) for t in tables}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    run_id = f"{run_date.isoformat()}/{now:%Y%m%dT%H%M%S}/{uuid.uuid4().hex[:8]}"
    row = [(run_id, run_date, stage, "complete", now, versions)]
    append_rows(spark.createDataFrame(row, C.RUNS.schema), C.RUNS, warehouse)
    return Run(run_date.isoformat(), versions, run_id)


def _ledger(warehouse: str, spark=None) -> list[dict]:
    """The ledger's complete rows, oldest first ([] when there is no ledger yet)."""
    path = C.RUNS.path(warehouse)
    if spark is not None:
        from osmf_core.store import read_table, table_exists
        if not table_exists(spark, C.RUNS, warehouse):
            return []
        rows = [r.asDict() for r in read_table(spark, C.RUNS, warehouse).where("status = 'complete'").collect()]
    else:
        import deltalake
        if not deltalake.DeltaTable.is_deltatable(path):
            return []
        frame = deltalake.DeltaTable(path).to_pandas()
        rows = frame[frame["status"] == "complete"].to_dict("records")
    for r in rows:
        r["versions"] = {k: int(v) for k, v in (r["versions"].items() if isinstance(r["versions"], dict)
                                                 else r["versions"])}
        r["run_date"] = str(r["run_date"])[:10]
    return sorted(rows, key=lambda r: (str(r["committed_at"]), r["run_id"]))


def published(warehouse: str, run_date: str = "", stage: str = REGROUP, spark=None) -> Run:
    """The latest complete run of `stage` (or the complete run of `run_date`), read at the table versions of
    the newest ledger row: every older complete run date is there too, since a run only replaces its own date.
    ConfigError (one line) when no run is complete or the date has none."""
    rows = [r for r in _ledger(warehouse, spark) if r["stage"] == stage]
    if not rows:
        raise ConfigError(f"{C.RUNS.fqn} at {C.RUNS.path(warehouse)} has no complete {stage} run "
                          f"(make {stage})")
    dates = sorted({r["run_date"] for r in rows})
    if run_date and str(run_date) not in dates:
        raise ConfigError(f"--run-date {run_date}: {C.GROUPS.fqn} has no run of that date; it has "
                          f"{', '.join(dates[-5:])} (complete runs in {C.RUNS.fqn})")
    newest = rows[-1]
    previous = Run(rows[-2]["run_date"], rows[-2]["versions"], rows[-2]["run_id"]) if len(rows) > 1 else None
    return Run(str(run_date) if run_date else dates[-1], newest["versions"], newest["run_id"], previous,
               newest["run_date"])


def roll_back_unpublished(spark, warehouse: str, stage: str = REGROUP, tables=REGROUP_TABLES) -> list[str]:
    """Undo what a killed run committed: every table goes back to its version in the newest complete run
    (Delta RESTORE), or is emptied when no complete run has it yet. Called first by the regroup, so that a
    later run never publishes a killed run's commits along with its own. Returns the tables changed."""
    from delta.tables import DeltaTable

    from osmf_core.store import current_version, table_exists
    rows = [r for r in _ledger(warehouse, spark) if r["stage"] == stage]
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
    from osmf_core.store import read_table
    return read_table(spark, t, warehouse, version=run.version(t))
