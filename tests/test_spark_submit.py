"""build_spark under a real spark-submit: the submitted configuration's shuffle partitions stand unless the job
names its own (a cluster's properties file must not be overridden by the local default)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
from osmf_core.data.config import add_spark_args, spark_settings
from osmf_core.data.spark import build_spark
import argparse
parser = argparse.ArgumentParser()
add_spark_args(parser)
spark = build_spark(spark_settings(parser.parse_args(sys.argv[1:])))
conf = spark.conf
from osmf_core.data.spark import job_conf
print("PROBE " + json.dumps({**{k: conf.get(k, None) for k in
      ("spark.sql.shuffle.partitions", "spark.databricks.delta.snapshotPartitions", "spark.master")},
      "job_conf": job_conf({"spark.sql.shuffle.partitions": "9", "spark.python.daemon.module": "m"})}))
spark.stop()
"""


def _delta_package() -> str:
    version = next(line.split("==")[1].strip() for line in (REPO / "requirements.lock").read_text().splitlines()
                   if line.startswith("delta-spark=="))
    return f"io.delta:delta-spark_2.13:{version}"


def _submit(tmp_path, properties: dict, job_args: list[str]) -> dict:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    props = tmp_path / "submit.properties"
    props.write_text("".join(f"{k} {v}\n" for k, v in properties.items()))
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "SPARK_HOME")}
    env.update(PYTHONPATH=str(REPO), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1")
    spark_submit = Path(sys.executable).parent / "spark-submit"
    proc = subprocess.run([str(spark_submit), "--master", "local[1]", "--packages", _delta_package(),
                           "--properties-file", str(props), str(probe), "--warehouse", str(tmp_path / "wh"),
                           *job_args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """One properties file (shuffle partitions 3), submitted without and with the job's own flag."""
    props = {"spark.sql.shuffle.partitions": 3}
    return (_submit(tmp_path_factory.mktemp("props"), props, []),
            _submit(tmp_path_factory.mktemp("flag"), props, ["--shuffle-partitions", "5"]))


def test_spark_submit_properties_file_sets_the_shuffle_partitions(submitted):
    from_props, _ = submitted
    assert from_props["spark.master"] == "local[1]"  # the submitted master, not the local default local[*]
    assert from_props["spark.sql.shuffle.partitions"] == "3"


def test_a_job_flag_still_overrides_the_submitted_shuffle_partitions(submitted):
    _, from_flag = submitted
    assert from_flag["spark.sql.shuffle.partitions"] == "5"
    assert from_flag["spark.databricks.delta.snapshotPartitions"] == "5"


def test_a_jobs_own_settings_yield_to_the_submitted_ones(submitted, monkeypatch):
    """spark.job_conf: of a job's own Spark settings (e.g. the regroup's SPARK_CONF), those a submitter set stand
    as submitted; the others apply. Outside spark-submit all apply."""
    from osmf_core.data.spark import job_conf
    from_props, _ = submitted
    assert from_props["job_conf"] == {"spark.python.daemon.module": "m"}  # shuffle partitions: submitted, 3
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert job_conf({"spark.sql.shuffle.partitions": "9"}) == {"spark.sql.shuffle.partitions": "9"}
