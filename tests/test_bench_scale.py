"""bench-scale's pieces with known answers: the memory sampler and the summary ratios."""
import subprocess
import sys
import time

import pytest

from osmf_core.evaluation.benchmarks.scale import PeakMemory, ScaleConfig, cost_line, heap_peak, summarise


def test_the_sampler_sees_the_peak_memory_of_a_pyspark_worker():
    """A process marked as a worker (a marker of its own: other Spark processes may run beside the tests)
    holding 300 MiB: its peak is seen."""
    hold = "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(2.5)"
    with PeakMemory(every=0.1, kinds={"python_worker": ("osmf-bench-scale-test-worker",)}) as mem:
        subprocess.run([sys.executable, "-c", hold, "osmf-bench-scale-test-worker"], check=True)
    assert 300 <= mem.peak["python_worker"] < 400
    assert mem.peak["total"] >= mem.peak["python_worker"]


def test_the_sampler_counts_the_cpu_seconds_a_process_used():
    """A marked process that burns CPU and reports its own CPU time, then idles past a sample: the
    sampler's count is that time, to the clock tick."""
    burn = ("import time, sys; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
            "print(time.process_time()); sys.stdout.flush(); time.sleep(0.5)")
    with PeakMemory(every=0.1, kinds={"burner": ("osmf-bench-scale-test-burner",)}) as mem:
        used = float(subprocess.run([sys.executable, "-c", burn, "osmf-bench-scale-test-burner"], check=True,
                                    capture_output=True, text=True).stdout)
    assert used >= 0.6 and mem.cpu["burner"] == pytest.approx(used, abs=0.05)
    assert mem.cpu["jit"] == 0.0  # no JVM among the kinds


def test_the_sampler_finds_a_jvms_jit_compiler_threads(spark):
    """The test session's JVM (a driver, as in local mode): its C1 and C2 compiler threads have used CPU,
    a part of the JVM's own."""
    with PeakMemory(every=0.1, kinds={"driver_jvm": ("org.apache.spark.deploy.SparkSubmit",)}) as mem:
        assert spark.range(200_000).selectExpr("sum(id * 2)").first()[0] == 200_000 * 199_999
        time.sleep(0.3)
    assert 0 < mem.cpu["jit"] < mem.cpu["driver_jvm"]


def test_the_summary_divides_the_largest_world_by_the_smallest():
    runs = [{"users": u, "mode": mode, "rows_per_s": r, "peak_python_worker_mib": w, "peak_jvm_mib": j,
             "peak_jvm_heap_used_mib": j / 2, "rows_embedded": 10_000.0 * u, "seconds": 20 + 10_000.0 * u / 50_000}
            for u, mode, r, w, j in ((600, "local", 24_000.0, 900.0, 3000.0), (60, "local", 30_000.0, 600.0, 2000.0),
                                     (200, "local", 27_000.0, 700.0, 2500.0), (60, "standalone", 20_000.0, 500.0, 1000.0),
                                     (600, "standalone", 22_000.0, 500.0, 1500.0))]
    s = summarise(runs)
    assert s["local"]["largest_over_smallest_rows_per_s"] == pytest.approx(0.8)
    assert s["local"]["largest_over_smallest_peak_python_worker"] == pytest.approx(1.5)
    assert s["standalone"]["largest_over_smallest_rows_per_s"] == pytest.approx(1.1)
    assert s["standalone"]["largest_over_smallest_peak_jvm_heap_used"] == pytest.approx(1.5)
    assert list(s["local"]["rows_per_s"]) == [60, 200, 600]
    # seconds = 20 + rows / 50,000 in every world: the line gives back the fixed part and the marginal rate
    assert s["local"]["fixed_seconds"] == pytest.approx(20.0)
    assert s["local"]["marginal_rows_per_s"] == pytest.approx(50_000.0)
    assert s["local"]["marginal_rows_per_s_by_step"] == pytest.approx([50_000.0, 50_000.0])
    assert s["local"]["line_max_residual"] == pytest.approx(0.0, abs=1e-9)
    bent = cost_line([1e6, 3e6, 9e6], [40.0, 80.0, 260.0])  # the last world slower per row: 30,000 rows/s
    assert bent["marginal_rows_per_s_by_step"] == pytest.approx([50_000.0, 6e6 / 180])
    assert bent["line_max_residual"] > 0.05
    with pytest.raises(ValueError, match="modes"):
        ScaleConfig(modes=("yarn",))


def test_the_heap_peak_is_the_largest_jvm_heap_in_use_of_any_executor_in_the_event_log(tmp_path):
    """Spark's event log lines (as logStageExecutorMetrics and task ends write them): the largest
    JVMHeapMemory of either kind, in MiB; other metrics and events are ignored."""
    mib = 2**20
    (tmp_path / "eventlog_v2_app-1").mkdir()  # Spark 4 writes a folder per application
    (tmp_path / "eventlog_v2_app-1" / "events_1_app-1").write_text("\n".join([
        '{"Event":"SparkListenerApplicationStart","App Name":"regroup"}',
        f'{{"Event":"SparkListenerStageExecutorMetrics","Executor ID":"0","Executor Metrics":{{"JVMHeapMemory":{300 * mib},"JVMOffHeapMemory":{900 * mib}}}}}',
        f'{{"Event":"SparkListenerTaskEnd","Task Executor Metrics":{{"JVMHeapMemory":{512 * mib},"ProcessTreeJVMRSSMemory":{4000 * mib}}}}}',
        f'{{"Event":"SparkListenerStageExecutorMetrics","Executor ID":"1","Executor Metrics":{{"JVMHeapMemory":{128 * mib}}}}}']))
    assert heap_peak(tmp_path) == 512.0
