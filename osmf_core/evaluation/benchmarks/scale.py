"""The whole nightly regroup at three world sizes, in local mode and on a two-worker standalone cluster
(jobs/bench_scale.py is its command line; `make bench-scale`).

Each world is simulated with the default world's seed, product count and parameters (the v2 preset: product
popularity Zipf-distributed, so the largest products have several times the median's viewers) and only the
number of users changed; its catalog is therefore the default world's, and the bench reuses the encoder
features (feat.title_tokens, feat.image_patches) of a warehouse where they were built and a PAAG trained
there (`make paag-model`). Every regroup runs as its own job process (`jobs/regroup.py`) with the same
settings and one heap for each JVM that runs tasks (`executor_memory`: a standalone executor's, and in local
mode the driver's, which holds the executor), so that memory is compared at one budget; while it runs, the
resident memory and CPU time of every such JVM and every PySpark worker are sampled twice a second. Per world
and mode: rows, rows/s, the seconds of each stage (gaip.metrics), the largest call, peak memory, CPU seconds
of the JVMs, of their JIT compilers and of the Python workers; overall the ratio of the largest world's rows/s
to the smallest's. Writes reports/bench_scale.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError, default_warehouse
from osmf_core.data.reader import read_frame
from osmf_core.data.reports import write_report
from osmf_core.data.standalone import standalone_cluster
from osmf_core.grouping.regroup import RegroupConfig

REPO = Path(__file__).resolve().parents[3]
FEATURES = (C.TITLE_TOKENS, C.IMAGE_PATCHES)
MODES = ("local", "standalone")
_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these ticks a second


@dataclass
class ScaleConfig:
    users: tuple[int, ...] = (60_000, 200_000, 600_000)  # the worlds (60,000: the default world)
    modes: tuple[str, ...] = MODES  # local[*] and/or a standalone cluster of two one-core workers
    model: str = RegroupConfig.model  # trained PAAG (make paag-model) of the features' warehouse
    features_from: str = field(default_factory=default_warehouse)  # warehouse whose encoder features are reused
    work_dir: str = "bench/scale"  # the worlds' warehouses and the cluster's logs
    executor_memory: str = "2g"  # the heap of each JVM that runs tasks: a standalone executor's, the local driver's
    split_above: int = 0  # the regroup's --split-above (0: its default)
    keep: bool = False  # keep the worlds' warehouses (and reuse them on the next run)
    report: str = "reports/bench_scale.json"

    def __post_init__(self):
        self.users, self.modes = tuple(int(u) for u in self.users), tuple(self.modes)
        if not self.users or min(self.users) < 1000:
            raise ValueError(f"users must be world sizes of at least 1,000, got {self.users}")
        if set(self.modes) - set(MODES):
            raise ValueError(f"modes must be among {MODES}, got {self.modes}")


class PeakMemory:
    """Peak resident memory (MiB) of the processes whose command line holds one of `markers`, sampled in a
    thread: the largest single process of each kind, and the largest sum over all of them at one time.
    Whatever else runs Spark on the machine is counted too: the bench runs alone.

    Also the CPU seconds of each kind (`cpu`): each process's user and system time at its last sample (a
    process that ends between two samples loses at most the last interval's), and those of the JVMs' JIT
    compiler threads, C1 and C2, under "jit" (part of their JVM's)."""

    KINDS = {"executor_jvm": ("CoarseGrainedExecutorBackend",), "driver_jvm": ("org.apache.spark.deploy.SparkSubmit",),
             "python_worker": ("pyspark.daemon", "pyspark.worker")}
    JIT = ("C1 CompilerThre", "C2 CompilerThre")  # thread names as /proc gives them (15 characters)

    def __init__(self, every: float = 0.5, kinds: dict | None = None):
        self.kinds = kinds or self.KINDS
        self.every, self.peak = every, {**dict.fromkeys(self.kinds, 0.0), "total": 0.0}
        self._cpu: dict = {}  # (kind, pid) -> its CPU seconds at the last sample
        self._jit: dict = {}  # (pid, thread id) -> a JIT compiler thread's CPU seconds at the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> dict:
        """CPU seconds of each kind while sampled, and of the JIT compiler threads ("jit")."""
        out = dict.fromkeys(self.kinds, 0.0)
        for (kind, _), seconds in self._cpu.items():
            out[kind] += seconds
        return {**out, "jit": sum(self._jit.values())}

    def _run(self):
        while not self._stop.is_set():
            total = 0.0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                kind, rss = _sample(pid, self.kinds)
                if kind:
                    self.peak[kind] = max(self.peak[kind], rss)
                    total += rss
                    self._cpu[(kind, pid)] = max(self._cpu.get((kind, pid), 0.0), _cpu_seconds(f"/proc/{pid}")[1])
                    if kind.endswith("_jvm"):
                        self._jit.update(_jit_threads(pid, self.JIT))
            self.peak["total"] = max(self.peak["total"], total)
            self._stop.wait(self.every)


def _cpu_seconds(path: str) -> tuple[str, float]:
    """(name, user + system CPU seconds) of a process or thread from its /proc stat; ("", 0) once it ended."""
    try:
        stat = Path(path, "stat").read_text()
    except OSError:
        return "", 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return stat[stat.index("(") + 1:stat.rindex(")")], (int(fields[11]) + int(fields[12])) / _TICKS


def _jit_threads(pid: str, names: tuple) -> dict:
    """{(pid, thread id): CPU seconds} of a JVM's live threads named as its JIT compilers (a thread's CPU
    time only grows, and one that ended is not read again: its last reading stays in the sampler's)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        name, seconds = _cpu_seconds(f"/proc/{pid}/task/{tid}")
        if name.startswith(names):
            out[(pid, tid)] = seconds
    return out


def _sample(pid: str, kinds: dict) -> tuple[str | None, float]:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        kind = next((k for k, marks in kinds.items() if any(m in cmd for m in marks)), None)
        if kind is None:
            return None, 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return kind, int(line.split()[1]) / 1024
    except OSError:  # the process ended between listing and reading
        pass
    return None, 0.0


def world(cfg: ScaleConfig, users: int) -> str:
    """The warehouse of the world of `users` users: simulated (default seed, products and parameters), with
    the features warehouse's encoder features copied in."""
    wh = Path(cfg.work_dir) / f"world_{users}"
    if (wh / "raw" / "impressions").is_dir() and cfg.keep:
        return str(wh)
    shutil.rmtree(wh, ignore_errors=True)
    _job("simulate.py", "--users", str(users), "--warehouse", str(wh))
    for t in FEATURES:
        src = Path(t.path(cfg.features_from))
        if not src.is_dir():
            raise ConfigError(f"{t.fqn} is not in {cfg.features_from}: build the default world's features and "
                              "PAAG first (make paag-model)")
        shutil.copytree(src, t.path(str(wh)))
    return str(wh)


def _job(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(REPO / "jobs" / script), *args], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def regroup_run(cfg: ScaleConfig, wh: str, mode: str) -> dict:
    """One regroup of warehouse `wh` in `mode`: its gaip.metrics, the peak memory while it ran (resident,
    from /proc) and the peak JVM heap in use that Spark itself reports per executor (its event log)."""
    events = Path(cfg.work_dir).resolve() / "events" / f"{Path(wh).name}_{mode}"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    args = ["--model", cfg.model, "--warehouse", wh, *event_log_flags(events),
            *(["--split-above", str(cfg.split_above)] if cfg.split_above else [])]
    with PeakMemory() as mem:
        if mode == "local":  # the executor is the driver: the same heap as each standalone executor's
            _job("regroup.py", *args, "--conf", f"spark.driver.memory={cfg.executor_memory}")
        else:
            with standalone_cluster(workers=2, cores=1, memory=cfg.executor_memory,
                                    work_dir=str(Path(cfg.work_dir) / "standalone")) as master:
                _job("regroup.py", *args, "--master", master, "--conf", f"spark.executorEnv.PYTHONPATH={REPO}",
                     "--conf", f"spark.pyspark.python={sys.executable}",
                     "--conf", f"spark.executor.memory={cfg.executor_memory}")
    peak = {f"peak_{k}_mib": round(v, 1) for k, v in mem.peak.items()}
    peak.update({f"cpu_{k}_s": round(v, 1) for k, v in mem.cpu.items()})  # CPU seconds while the job ran
    # local mode runs the executor inside the driver's JVM
    peak["peak_jvm_mib"] = peak["peak_executor_jvm_mib"] if mode == "standalone" else peak["peak_driver_jvm_mib"]
    return {**latest_metrics(wh), **peak, "peak_jvm_heap_used_mib": heap_peak(events)}


def event_log_flags(events: Path) -> list[str]:
    """spark-submit flags for a plain event log (one uncompressed JSON file) with each stage's peak executor
    metrics, polled twice a second."""
    return [f for k, v in (("spark.eventLog.enabled", "true"), ("spark.eventLog.dir", events.as_uri()),
                           ("spark.eventLog.logStageExecutorMetrics", "true"),
                           ("spark.eventLog.compress", "false"), ("spark.eventLog.rolling.enabled", "false"),
                           ("spark.executor.metrics.pollingInterval", "500ms")) for f in ("--conf", f"{k}={v}")]


def heap_peak(events: Path) -> float:
    """The largest JVMHeapMemory (MiB) of any executor in the event logs under `events` (local mode: the
    driver's JVM, which runs the tasks): the heap in use, not what the JVM has reserved."""
    peak = 0
    for f in (f for f in events.rglob("*") if f.is_file() and not f.name.startswith(".")):
        for line in f.open():
            if '"JVMHeapMemory"' in line:
                e = json.loads(line)
                for m in (e.get("Executor Metrics"), e.get("Task Executor Metrics")):
                    peak = max(peak, (m or {}).get("JVMHeapMemory", 0))
    return round(peak / 2**20, 1)


def latest_metrics(wh: str) -> dict:
    """The regroup's gaip.metrics (a bench world has one run date: a rerun replaces its rows)."""
    m = read_frame(C.METRICS, wh, ["stage", "name", "value"])
    m = m[m["stage"] == "regroup"]
    return dict(zip(m["name"], m["value"].astype(float)))


def cost_line(rows: list[float], seconds: list[float]) -> dict:
    """The run's seconds as a line in its rows, least squares over the worlds: seconds = fixed + rows / rate.
    A job whose cost is linear in rows plus a fixed start has rows/s rising with size, and this says how
    much of that is the fixed part: `fixed_seconds`, `marginal_rows_per_s`, the marginal rate between
    consecutive worlds (equal for a straight line), and the largest residual as a share of a run's seconds."""
    x, y = np.asarray(rows, float), np.asarray(seconds, float)
    if len(x) < 2:
        return {}
    slope, fixed = np.polyfit(x, y, 1)
    return {"fixed_seconds": float(fixed), "marginal_rows_per_s": float(1 / slope),
            "marginal_rows_per_s_by_step": [float((x[i + 1] - x[i]) / (y[i + 1] - y[i])) for i in range(len(x) - 1)],
            "line_max_residual": float(np.max(np.abs(y - (fixed + slope * x)) / y))}


def summarise(runs: list[dict]) -> dict:
    """Per mode: rows/s at each size and the ratio of the largest world's to the smallest's, the ratio of
    their peak memories, and the cost as a line in rows (cost_line)."""
    out = {}
    for mode in sorted({r["mode"] for r in runs}):
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["users"])
        lo, hi = rs[0], rs[-1]
        out[mode] = {"rows_per_s": {r["users"]: r["rows_per_s"] for r in rs},
                     **cost_line([r["rows_embedded"] for r in rs], [r["seconds"] for r in rs]),
                     "largest_over_smallest_rows_per_s": hi["rows_per_s"] / lo["rows_per_s"],
                     "largest_over_smallest_peak_python_worker": hi["peak_python_worker_mib"] / lo["peak_python_worker_mib"],
                     "largest_over_smallest_peak_jvm": hi["peak_jvm_mib"] / lo["peak_jvm_mib"],
                     "largest_over_smallest_peak_jvm_heap_used": hi["peak_jvm_heap_used_mib"] / lo["peak_jvm_heap_used_mib"]}
    return out


STAGES = ("validate", "viewers", "embed_cluster", "write")


def bench(cfg: ScaleConfig) -> dict:
    runs = []
    print(f"{'users':>9} {'mode':>10} {'rows':>12} {'rows/s':>8} " + " ".join(f"{s:>13}" for s in STAGES)
          + f" {'split':>5} {'max call':>9} {'JVM MiB':>8} {'heap MiB':>8} {'worker MiB':>10} {'fixed MiB':>9}")
    for users in cfg.users:
        t = time.perf_counter()
        wh = world(cfg, users)
        print(f"  world of {users:,} users ready in {time.perf_counter() - t:.0f} s: {wh}", flush=True)
        for mode in cfg.modes:
            m = regroup_run(cfg, wh, mode)
            runs.append({"users": users, "mode": mode, **m})
            _write(cfg, runs)  # after every run: a stopped bench keeps what it measured
            print(f"{users:>9,} {mode:>10} {m['rows_embedded']:>12,.0f} {m['rows_per_s']:>8,.0f} "
                  + " ".join(f"{m.get('seconds_' + s, float('nan')):>12.1f}s" for s in STAGES)
                  + f" {m['products_split']:>5.0f} {m['max_rows_per_call']:>9,.0f} {m['peak_jvm_mib']:>8,.0f} "
                  f"{m['peak_jvm_heap_used_mib']:>8,.0f} "
                  f"{m['peak_python_worker_mib']:>10,.0f} {m['worker_fixed_rss_mib']:>9,.0f}", flush=True)
        if not cfg.keep:
            shutil.rmtree(wh, ignore_errors=True)
    report = _write(cfg, runs)
    for mode, s in report["summary"].items():
        print(f"{mode}: rows/s of the largest world / the smallest {s['largest_over_smallest_rows_per_s']:.2f}; "
              f"peak worker memory {s['largest_over_smallest_peak_python_worker']:.2f}x, JVM "
              f"{s['largest_over_smallest_peak_jvm']:.2f}x resident, "
              f"{s['largest_over_smallest_peak_jvm_heap_used']:.2f}x heap in use")
        if "fixed_seconds" in s:
            print(f"{mode}: seconds = {s['fixed_seconds']:.1f} + rows / {s['marginal_rows_per_s']:,.0f} (marginal rows/s "
                  "between worlds " + ", ".join(f"{v:,.0f}" for v in s["marginal_rows_per_s_by_step"])
                  + f"; largest residual {100 * s['line_max_residual']:.0f}% of a run)")
    return report


def _write(cfg: ScaleConfig, runs: list[dict]) -> dict:
    report = {"runs": runs, "summary": summarise(runs), "cores": os.cpu_count(), "config": {
        "users": list(cfg.users), "modes": list(cfg.modes), "executor_memory": cfg.executor_memory,
        "split_above": cfg.split_above or RegroupConfig.split_above}}
    write_report(cfg.report, report)
    return report
