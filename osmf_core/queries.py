"""The data engineers' queries in sql/queries/: list them, fill in their parameters, run them with Spark SQL.

Each file holds one SELECT over catalog tables by name (raw.products, gaip.group_ctr, ...) and states
its grain in its header. Parameters are written ${name}:
  run_date                  the regroup run to look at (default: the latest in gaip.groups)
  top_n                     row limit of the "largest ..." queries (default 20)
  <table>_prev_version      for every gaip table, its Delta version before the last write (Delta
                            time travel; the current version when the table has only one)
"""
from __future__ import annotations

import re
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from osmf_core import catalog as C
from osmf_core.config import ConfigError
from osmf_core.store import read_table, register_tables, table_exists

QUERY_DIR = Path(__file__).resolve().parent.parent / "sql" / "queries"
_PARAM = re.compile(r"\$\{(\w+)\}")


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
    if run_date:
        params["run_date"] = str(run_date)
    elif table_exists(spark, C.GROUPS, warehouse):
        latest = read_table(spark, C.GROUPS, warehouse).agg(F.max("run_date")).first()[0]
        if latest is not None:
            params["run_date"] = latest.isoformat()
    for t in C.TABLES:
        if t.layer == "gaip" and table_exists(spark, t, warehouse):
            version = DeltaTable.forPath(spark, t.path(warehouse)).history(1).first()["version"]
            params[f"{t.name}_prev_version"] = str(max(0, int(version) - 1))
    return params


def render(sql: str, params: dict) -> str:
    """Fill in ${name} parameters; a parameter without a value is an error naming it."""
    missing = sorted({m for m in _PARAM.findall(sql) if m not in params})
    if missing:
        raise ConfigError(f"no value for {', '.join(missing)}: run the regroup first or pass it explicitly")
    return _PARAM.sub(lambda m: params[m.group(1)], sql)


def run(spark: SparkSession, name: str, warehouse: str, run_date: str | None = None, top_n: int = 20,
        folder: Path = QUERY_DIR) -> DataFrame:
    """The query's result as a DataFrame, with the warehouse's tables registered by name."""
    sql = text(name, folder)
    register_tables(spark, C.TABLES, warehouse)
    return spark.sql(render(sql, parameters(spark, warehouse, run_date, top_n)))
