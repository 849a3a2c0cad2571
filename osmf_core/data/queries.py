"""The data engineers' queries in sql/queries/: list them, fill in their parameters, run them with Spark SQL.

Each file holds one SELECT over catalog tables by name (raw.products, gaip.group_ctr, ...) and states
its grain in its header. The regroup's tables are read at the versions the run ledger (gaip.runs)
gives, so a query never sees a run that was killed between two of its commits. Parameters are
written ${name}:
  run_date                  the regroup run to look at (default: the latest complete one in gaip.runs)
  top_n                     row limit of the "largest ..." queries (default 20)
  <table>_version           for every table a regroup run writes, its Delta version in the newest
                            complete run (Delta time travel: `from gaip.groups version as of ${groups_version}`)
  <table>_prev_version      the same in the complete run published before it (the newest when there is
                            only one)
  last_run_date, prev_run_date   the run dates those two runs wrote
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError
from osmf_core.data.ledger import published_in
from osmf_core.data.runs import REGROUP_TABLES
from osmf_core.data.store import register_tables

QUERY_DIR = Path(__file__).resolve().parents[2] / "sql" / "queries"
_PARAM = re.compile(r"\$\{(\w+)\}")


@dataclass
class QueryConfig:
    query: str = ""  # query name (file name without .sql); empty: list the queries
    run_date: str = ""  # regroup run (default: the latest complete one)
    top_n: int = 20  # row limit of the "largest ..." queries
    rows: int = 50  # rows to print


def names(folder: Path = QUERY_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.sql"))


def text(name: str, folder: Path = QUERY_DIR) -> str:
    path = folder / f"{name}.sql"
    if not path.exists():
        raise KeyError(f"no query {name!r} in sql/queries (have: {', '.join(names(folder))})")
    return path.read_text()


def parameters(spark: SparkSession, warehouse: str, run_date: str | None = None, top_n: int = 20) -> dict:
    """Values of the ${...} parameters for this warehouse."""
    params: dict[str, str] = {"top_n": str(int(top_n))}
    try:
        run = published_in(spark, warehouse, run_date or "")
    except ConfigError:
        if run_date:  # a date that has no complete run
            raise
        return params  # no complete run yet: a query that needs one names the missing parameter
    params["run_date"] = run.run_date
    params["last_run_date"] = run.last_run_date
    params["prev_run_date"] = (run.previous or run).run_date
    for t in (t for t in REGROUP_TABLES if t.fqn in run.versions):
        params[f"{t.name}_version"] = str(run.version(t))
        params[f"{t.name}_prev_version"] = str((run.previous or run).version(t))
    return params


def render(sql: str, params: dict) -> str:
    """Fill in ${name} parameters; a parameter without a value is an error naming it."""
    missing = sorted({m for m in _PARAM.findall(sql) if m not in params})
    if missing:
        raise ConfigError(f"no value for {', '.join(missing)}: no complete regroup run in gaip.runs "
                          "(make regroup) or pass it explicitly")
    return _PARAM.sub(lambda m: params[m.group(1)], sql)


def run_query(spark: SparkSession, name: str, warehouse: str, run_date: str | None = None, top_n: int = 20,
        folder: Path = QUERY_DIR) -> DataFrame:
    """The query's result as a DataFrame, with the warehouse's tables registered by name."""
    sql = text(name, folder)
    register_tables(spark, C.TABLES, warehouse)
    return spark.sql(render(sql, parameters(spark, warehouse, run_date, top_n)))
