"""Benchmark of the simulator: rows generated and loaded per second at two world sizes, 10x apart
(jobs/bench_simulate.py is its command line).

Both sizes run in one Spark session, after a warm-up, into a scratch warehouse; the rows counted are
all rows loaded (users + products + creatives + impressions). Prints the ratio of the two throughputs
(near 1 or above = the simulator scales linearly) and writes reports/bench_simulate.json.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

from osmf_core.data.config import SparkSettings
from osmf_core.data.reports import write_report
from osmf_core.data.spark import build_spark
from osmf_core.world.model import WorldSize
from osmf_core.world.simulate import SimulateConfig, simulate_world


@dataclass
class BenchConfig:
    users: int = 4_000  # users of the small world (the large has 10x)
    impressions_per_user: float = 50.0  # impressions per user of both worlds
    report: str = "reports/bench_simulate.json"  # where the report goes


def bench(cfg: BenchConfig) -> dict:
    """A warm-up, then the small and the large world; prints the table and writes the report."""
    scratch = tempfile.mkdtemp(prefix="osmf-bench-")
    spark = build_spark(SparkSettings(warehouse=scratch, show_progress=False))
    quiet = lambda *_: None  # noqa: E731

    def once(users: int, tag: str) -> dict:
        size = WorldSize(users=users, products=max(14, users // 70), impressions_per_user=cfg.impressions_per_user)
        t0 = time.perf_counter()
        result = simulate_world(spark, SimulateConfig(seed=1, size=size), f"{scratch}/{tag}", log=quiet)
        secs = time.perf_counter() - t0
        rows = result.rows_generated()
        return {"users": users, "products": size.products, "rows": rows, "seconds": round(secs, 2),
                "rows_per_s": round(rows / secs, 1)}

    once(500, "warmup")
    sizes = [once(cfg.users, "small"), once(cfg.users * 10, "large")]
    spark.stop()
    small, large = sizes
    print(f"{'users':>10} {'rows':>12} {'seconds':>9} {'rows/s':>12}")
    for s in sizes:
        print(f"{s['users']:>10,} {s['rows']:>12,} {s['seconds']:>9.1f} {s['rows_per_s']:>12,.0f}")
    print(f"throughput ratio large/small: {large['rows_per_s'] / small['rows_per_s']:.2f}x "
          f"(rows {large['rows'] / small['rows']:.1f}x, time {large['seconds'] / small['seconds']:.1f}x)")
    report = {"sizes": sizes}
    write_report(cfg.report, report)
    return report
