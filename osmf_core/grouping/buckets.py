"""How the regroup deals its products to clustering calls and its calls to tasks: products packed into
buckets of about equal rows (one applyInArrow call each), the buckets dealt like cards to the tasks, and
as many tasks as keep each task's rows bounded whatever the world's size (grouping.regroup.cluster)."""
from __future__ import annotations

import heapq

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def task_count(rows: int, cores: int, rows_per_task: int) -> int:
    """The clustering's tasks: `cores`, or the least multiple of it that holds `rows` at `rows_per_task` a
    task. Each task sorts its rows for the cogroup, so a fixed number of tasks would sort more rows the
    larger the world (and spill them to disk once the executor's memory is full); a multiple of the cores
    keeps the last wave of tasks as full as the others. The viewers' aggregation takes its partitions the
    same way, from the shuffle partitions and the window's impressions (grouping.regroup.viewers)."""
    return cores * max(1, -(-rows // (cores * rows_per_task)))


def pack(sizes: dict[int, int], n: int) -> dict[int, int]:
    """Products into n buckets of about equal rows: the largest first, each into the lightest bucket
    (longest processing time first: no bucket exceeds the mean by more than one product)."""
    load = [(0, b) for b in range(n)]
    heapq.heapify(load)
    out = {}
    for pid, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        rows, b = heapq.heappop(load)
        out[pid] = b
        heapq.heappush(load, (rows + size, b))
    return out


def bucket_labels(spark: SparkSession, n: int, tasks: int) -> list[int]:
    """n distinct bucket values, bucket b's sent by Spark's hash partitioning into `tasks` partitions
    (pmod(murmur3(v), tasks), what repartition(tasks, "bucket") computes) to partition b mod tasks: the
    buckets are dealt to the tasks like cards, so that the even buckets of `pack` make even tasks (the
    values 0..n-1 themselves would fall unevenly)."""
    v = F.col("id").cast("int")
    per = (spark.range(64 * n).select(v.alias("v"), F.pmod(F.hash(v), F.lit(tasks)).alias("p"))
           .groupBy("p").agg(F.sort_array(F.collect_list("v")).alias("vs")).collect())
    values = {r["p"]: r["vs"] for r in per}
    return [values[b % tasks][b // tasks] for b in range(n)]
