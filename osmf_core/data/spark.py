"""The one SparkSession builder: Delta's extension and catalog, jars from Maven Central (cached by ivy)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Callable

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

from osmf_core.data.config import (
    LOCAL_SHUFFLE_PARTITIONS,
    ConfigError,
    SparkSettings,
    add_spark_args,
    config_error,
    spark_settings,
)
from osmf_core.data.flags import add_config_args, config_from_args, job_parser


def build_spark(settings: SparkSettings | None = None) -> SparkSession:
    """A SparkSession with Delta. Under spark-submit the master and jars it was given win."""
    s = settings or SparkSettings()
    # local mode: python workers run the same interpreter as the driver
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(s.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", f"{s.warehouse.rstrip('/')}/_spark_sql")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")  # a narrowing cast that overflows fails, never wraps
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", str(s.show_progress).lower())
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    partitions = s.shuffle_partitions
    if not _under_spark_submit():
        builder = builder.master(s.master).config("spark.driver.memory", s.driver_memory)
        partitions = partitions or LOCAL_SHUFFLE_PARTITIONS
    if partitions is not None:  # else spark-submit's own value (properties file, --conf) stands
        builder = (builder.config("spark.sql.shuffle.partitions", str(partitions))
                   # Delta rebuilds table state with this many tasks (default 50): too many for small tables
                   .config("spark.databricks.delta.snapshotPartitions", str(partitions)))
    for key, value in s.conf.items():
        builder = builder.config(key, str(value))
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel(s.log_level)
    spark.conf.set("warehouse", s.warehouse)  # ${warehouse} in sql/ files
    return spark


def _under_spark_submit() -> bool:
    """True when spark-submit launched this python: its JVM is up and already has master and jars."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def job_conf(conf: dict) -> dict:
    """A job's own Spark settings less those that spark-submit was given (--conf, --properties-file): a cluster's
    settings stand."""
    if not conf or not _under_spark_submit():
        return dict(conf)
    from pyspark import SparkConf  # under spark-submit: the submitted settings, from the JVM already up
    submitted = SparkConf()
    return {k: v for k, v in conf.items() if not submitted.contains(k)}


def with_job_conf(settings, conf: dict):
    """`settings` (a SparkSettings) with a job's own Spark settings under its own and the submitted ones
    (job_conf)."""
    return replace(settings, conf={**job_conf(conf), **settings.conf})


def run_job(name: str, args: argparse.Namespace, make_config: Callable, run: Callable, conf: dict | None = None) -> int:
    """The shell of a Spark job: its config and Spark settings from `args`, then `run(spark, cfg, warehouse)`.
    A configuration that cannot work stops in one `name: ...` line, exit code 2, before any table is touched;
    the run's summary goes to `args.summary_json` when one is given. `conf`: the job's own Spark settings,
    under those of --conf and --spark-config."""
    try:
        try:
            cfg = make_config(args)
        except ValueError as e:  # a config class's own checks
            raise ConfigError(str(e)) from None
        settings = with_job_conf(spark_settings(args), conf or {})
        spark = build_spark(settings)
        summary = run(spark, cfg, settings.warehouse)
    except ConfigError as e:
        return config_error(name, e)
    if getattr(args, "summary_json", None):
        with open(args.summary_json, "w") as fh:
            json.dump(summary, fh, indent=2)
    spark.stop()
    return 0


def settings_job(name: str, doc: str | None, config_cls, run: Callable, argv=None) -> int:
    """The main of a job that starts its own Spark sessions (the demo, make evaluate): flags from `config_cls` and
    the Spark flags, then `run(cfg, settings)`. A configuration that cannot work stops in one `name: ...` line,
    exit code 2."""
    ap = job_parser(doc)
    add_config_args(ap, config_cls)
    add_spark_args(ap)
    args = ap.parse_args(argv)
    try:
        try:
            cfg, settings = config_from_args(config_cls, args), spark_settings(args)
        except ValueError as e:  # a config class's own checks
            raise ConfigError(str(e)) from None
        run(cfg, settings)
    except ConfigError as e:
        return config_error(name, e)
    return 0


def spark_job(name: str, doc: str | None, config_cls, run: Callable, argv=None, prepare: Callable | None = None,
              conf: dict | None = None) -> int:
    """A whole Spark job's main: flags from `config_cls` (osmf_core.data.flags), --summary-json and the Spark
    flags; then `run(spark, cfg, warehouse)` through `run_job`. `prepare(cfg, warehouse) -> cfg` checks what
    can be checked before Spark starts; `conf`: the job's own Spark settings (run_job)."""
    ap = job_parser(doc)
    add_config_args(ap, config_cls)
    ap.add_argument("--summary-json", help="also write the run's summary to this file")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    prepare = prepare or (lambda cfg, warehouse: cfg)
    return run_job(name, args, lambda a: prepare(config_from_args(config_cls, a), spark_settings(a).warehouse), run,
                   conf)
