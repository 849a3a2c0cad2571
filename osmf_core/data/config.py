"""Spark settings shared by every job: defaults for the local embedded run, a YAML file or flags for a cluster."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A job's configuration cannot work (bad flag, missing table or model, empty window): the job stops
    with this one-line message before doing any work."""


def default_warehouse() -> str:
    """The local Delta warehouse: $OSMF_WAREHOUSE, else ./warehouse."""
    return os.environ.get("OSMF_WAREHOUSE") or str(Path("warehouse").absolute())


LOCAL_SHUFFLE_PARTITIONS = 8  # small tables on one machine: Spark's default of 200 is mostly empty tasks


@dataclass
class SparkSettings:
    # where Spark runs
    master: str = "local[*]"  # spark master URL; ignored when spark-submit already set one
    app_name: str = "osmf"  # application name shown in the Spark UI
    # where the tables live
    warehouse: str = field(default_factory=default_warehouse)  # Delta warehouse root: local path or URI
    # tuning
    # spark.sql.shuffle.partitions. None: LOCAL_SHUFFLE_PARTITIONS in local mode; under spark-submit, whatever
    # the submitted configuration says (--conf or --properties-file), so a cluster's sizing is never overridden
    shuffle_partitions: int | None = None
    driver_memory: str = "4g"  # local mode only: the driver JVM holds the executors
    log_level: str = "WARN"  # Spark's own log level
    show_progress: bool = True  # Spark's console progress bar for stages
    conf: dict = field(default_factory=dict)  # any other spark.* setting, applied last

    def __post_init__(self):
        if not self.master:
            raise ValueError("master must be a Spark master URL such as local[*], spark://host:7077 or yarn")
        if self.shuffle_partitions is not None and self.shuffle_partitions < 1:
            raise ValueError(f"shuffle_partitions must be >= 1, got {self.shuffle_partitions}")
        if "://" not in self.warehouse:
            self.warehouse = str(Path(self.warehouse).absolute())
        bad = [k for k in self.conf if not str(k).startswith("spark.")]
        if bad:
            raise ValueError(f"conf keys must start with 'spark.': {bad}")


def config_error(job: str, error: Exception) -> int:
    """A job's configuration error as its one line on stderr; returns the exit code, 2."""
    print(f"{job}: {error}", file=sys.stderr)
    return 2


def add_spark_args(parser: argparse.ArgumentParser) -> None:
    """The flags every Spark job takes."""
    g = parser.add_argument_group("spark")
    g.add_argument("--spark-config", help="YAML file of SparkSettings fields (see cluster/*.yaml)")
    g.add_argument("--master", help="Spark master URL (default local[*])")
    g.add_argument("--warehouse", help="Delta warehouse root (default $OSMF_WAREHOUSE or ./warehouse)")
    g.add_argument("--shuffle-partitions", type=int, help="spark.sql.shuffle.partitions")
    g.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf")


def spark_settings(args: argparse.Namespace) -> SparkSettings:
    """SparkSettings from the YAML file named by --spark-config, then the flags on top."""
    values: dict = {}
    if args.spark_config:
        if not Path(args.spark_config).is_file():
            raise ConfigError(f"--spark-config {args.spark_config} does not exist")
        loaded = yaml.safe_load(Path(args.spark_config).read_text()) or {}
        known = {f.name for f in fields(SparkSettings)}
        unknown = set(loaded) - known
        if unknown:
            raise ConfigError(f"{args.spark_config}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        values.update(loaded)
    for name in ("master", "warehouse", "shuffle_partitions"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    conf = dict(values.get("conf") or {})
    for item in args.conf:
        if "=" not in item:
            raise ConfigError(f"--conf takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        conf[key] = value
    values["conf"] = conf
    try:
        return SparkSettings(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from None
