"""The regroup's PySpark daemon (spark.python.daemon.module, set by regroup.SPARK_CONF): PySpark's own
daemon, after it has imported what every clustering worker imports (torch, pyarrow, pandas and
osmf_core.grouping.batch: about 2 s of CPU). Workers are forked from the daemon, so each starts with them
loaded, in pages it shares with the daemon and the other workers, instead of importing them again. Nothing
is computed before the fork, so torch has started no thread."""
from __future__ import annotations

from pyspark.daemon import manager

import osmf_core.grouping.batch  # noqa: F401  (torch, numpy, pyarrow, pandas, pyspark.sql)

if __name__ == "__main__":
    manager()
