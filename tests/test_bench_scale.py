"""bench-scale's pieces with known answers: the memory sampler and the summary ratios."""
import subprocess
import sys

import pytest

from osmf_core.evaluation.benchmarks.scale import PeakMemory, ScaleConfig, summarise


def test_the_sampler_sees_the_peak_memory_of_a_pyspark_worker():
    """A process marked as a worker (a marker of its own: other Spark processes may run beside the tests)
    holding 300 MiB: its peak is seen."""
    hold = "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(2.5)"
    with PeakMemory(every=0.1, kinds={"python_worker": ("osmf-bench-scale-test-worker",)}) as mem:
        subprocess.run([sys.executable, "-c", hold, "osmf-bench-scale-test-worker"], check=True)
    assert 300 <= mem.peak["python_worker"] < 400
    assert mem.peak["total"] >= mem.peak["python_worker"]


def test_the_summary_divides_the_largest_world_by_the_smallest():
    runs = [{"users": u, "mode": mode, "rows_per_s": r, "peak_python_worker_mib": w, "peak_jvm_mib": j}
            for u, mode, r, w, j in ((600, "local", 24_000.0, 900.0, 3000.0), (60, "local", 30_000.0, 600.0, 2000.0),
                                     (200, "local", 27_000.0, 700.0, 2500.0), (60, "standalone", 20_000.0, 500.0, 1000.0),
                                     (600, "standalone", 22_000.0, 500.0, 1500.0))]
    s = summarise(runs)
    assert s["local"]["largest_over_smallest_rows_per_s"] == pytest.approx(0.8)
    assert s["local"]["largest_over_smallest_peak_python_worker"] == pytest.approx(1.5)
    assert s["standalone"]["largest_over_smallest_rows_per_s"] == pytest.approx(1.1)
    assert list(s["local"]["rows_per_s"]) == [60, 200, 600]
    with pytest.raises(ValueError, match="modes"):
        ScaleConfig(modes=("yarn",))
