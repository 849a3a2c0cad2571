"""cluster/submit.sh regroup on a Spark standalone cluster (two workers on this host), as the nightly script
runs it (SPARK_MASTER + SPARK_PROPERTIES=cluster/spark/standalone.properties): same tables as local mode."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.grouping.regroup import RegroupConfig, regroup
from osmf_core.data.standalone import standalone_cluster
from osmf_core.data.store import checksum, read_table

from test_regroup import CFG

REPO = Path(__file__).resolve().parents[1]
TABLES = (C.GROUPS, C.USER_GROUPS, C.GROUP_CTR, C.PAIRS)


@pytest.mark.slow
def test_submit_sh_regroup_on_standalone_cluster_writes_the_same_tables_as_local_mode(spark, paag_wh, paag_model,
                                                                                       tmp_path, monkeypatch):
    local_wh, cluster_wh = tmp_path / "local", tmp_path / "cluster"
    for wh in (local_wh, cluster_wh):
        shutil.copytree(paag_wh, wh, ignore=shutil.ignore_patterns("gaip"))
    run_date = regroup(spark, RegroupConfig(model=paag_model, **CFG), str(local_wh), log=lambda *_: None)["run_date"]
    args = [f"--{k.replace('_', '-')}={v}" for k, v in CFG.items()]
    # as from a shell with the pinned environment active: its spark-submit and python first on PATH; the
    # executors' Python workers run this interpreter, osmf_core reaches them as the zip submit.sh builds
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_GATEWAY_PORT", "SPARK_HOME")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_PROPERTIES="cluster/spark/standalone.properties", SPARK_LOCAL_IP="127.0.0.1")
    log = tmp_path / "submit.log"
    monkeypatch.delenv("PYTHONPATH", raising=False)  # nor do the workers' executors inherit one that finds the repo
    with standalone_cluster(workers=2, cores=1, memory="1g", work_dir=str(tmp_path / "standalone")) as master:
        with open(log, "w") as fh:
            proc = subprocess.run(["cluster/submit.sh", "regroup", "--model", paag_model, "--run-date", run_date,
                                   *args, "--warehouse", str(cluster_wh)],
                                  cwd=REPO, env={**env, "SPARK_MASTER": master}, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=1200)
    assert proc.returncode == 0, log.read_text()[-4000:]
    groups = read_table(spark, C.GROUPS, str(cluster_wh))
    assert groups.where(F.col("run_date") == F.lit(run_date).cast("date")).count() > 0
    for t in TABLES:
        a, b = read_table(spark, t, str(local_wh)), read_table(spark, t, str(cluster_wh))
        assert a.count() > 0
        assert checksum(a) == checksum(b), t.fqn
