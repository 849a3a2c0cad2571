"""The run ledger gaip.runs: a regroup run becomes visible whole, or not at all.

The regroup commits its tables one by one (each Delta commit is atomic, the set of them is not), then
appends one row to gaip.runs naming the Delta version each table reached. A reader of "the latest run"
takes the run date from the ledger and reads every table at the versions of its newest row. A run killed
between two commits has no ledger row, so readers keep answering from the previous run, consistently
across tables, even when the killed run was a rerun of the same date.

  published(warehouse)                  the latest complete run: run date + table versions
  published(warehouse, run_date="...")  a given complete run date, read at the newest versions

This module reads the ledger without Spark (through the Delta log, `deltalake`); its Spark side (the
regroup's publish and roll-back, readers inside a Spark job) is `osmf_core.data.ledger`.
"""
from __future__ import annotations

from dataclasses import dataclass

import deltalake

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError

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


def complete_rows(rows) -> list[dict]:
    """The ledger's complete rows, oldest first, with plain versions and run dates."""
    rows = [dict(r) for r in rows if r["status"] == "complete"]
    for r in rows:
        r["versions"] = {k: int(v) for k, v in (r["versions"].items() if isinstance(r["versions"], dict)
                                                 else r["versions"])}
        r["run_date"] = str(r["run_date"])[:10]
    return sorted(rows, key=lambda r: (str(r["committed_at"]), r["run_id"]))


def _ledger(warehouse: str) -> list[dict]:
    """The ledger's complete rows read through the Delta log ([] when there is no ledger yet)."""
    path = C.RUNS.path(warehouse)
    if not deltalake.DeltaTable.is_deltatable(path):
        return []
    return complete_rows(deltalake.DeltaTable(path).to_pandas().to_dict("records"))


def published(warehouse: str, run_date: str = "", stage: str = REGROUP, ledger: list[dict] | None = None) -> Run:
    """The latest complete run of `stage` (or the complete run of `run_date`), read at the table versions of
    the newest ledger row: every older complete run date is there too, since a run only replaces its own date.
    ConfigError (one line) when no run is complete or the date has none. `ledger`: the complete rows when the
    caller read them already (`ledger.published_in` reads them through Spark)."""
    rows = [r for r in (_ledger(warehouse) if ledger is None else ledger) if r["stage"] == stage]
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
