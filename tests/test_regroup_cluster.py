"""The regroup job on a Spark standalone cluster (two workers on this host) writes the same tables as local mode."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osmf_core.data import catalog as C
from osmf_core.grouping.regroup import RegroupConfig, regroup
from osmf_core.data.standalone import standalone_cluster
from osmf_core.data.store import checksum, read_table

from test_regroup import CFG

REPO = Path(__file__).resolve().parents[1]
TABLES = (C.GROUPS, C.USER_GROUPS, C.GROUP_CTR, C.PAIRS)


@pytest.mark.slow
def test_standalone_cluster_writes_the_same_tables_as_local_mode(spark, paag_wh, paag_model, tmp_path):
    local_wh, cluster_wh = tmp_path / "local", tmp_path / "cluster"
    for wh in (local_wh, cluster_wh):
        shutil.copytree(paag_wh, wh, ignore=shutil.ignore_patterns("gaip"))
    regroup(spark, RegroupConfig(model=paag_model, **CFG), str(local_wh), log=lambda *_: None)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in CFG.items()]
    with standalone_cluster(workers=2, cores=1, memory="1g", work_dir=str(tmp_path / "standalone")) as master:
        subprocess.run([sys.executable, str(REPO / "jobs" / "regroup.py"), "--model", paag_model, *args,
                        "--master", master, "--warehouse", str(cluster_wh), "--shuffle-partitions", "2",
                        "--conf", f"spark.executorEnv.PYTHONPATH={REPO}", "--conf", f"spark.pyspark.python={sys.executable}",
                        "--conf", "spark.executor.memory=1g"],
                       check=True, cwd=REPO, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(REPO)})  # the driver imports osmf_core, as `make` runs it
    for t in TABLES:
        a, b = read_table(spark, t, str(local_wh)), read_table(spark, t, str(cluster_wh))
        assert a.count() > 0
        assert checksum(a) == checksum(b), t.fqn
