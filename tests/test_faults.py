"""Kill the nightly regroup at chosen and random points, rerun it, and check the GAIP tables end exactly as
after one clean run: never half-written (a killed run leaves each table at its old or its new content for
the run date), never duplicated, nothing lost; a reader during a write sees the old or the new version.
The regroup runs as its own process (jobs/regroup.py) in a new session so that a kill takes its JVM too.
What happened goes to reports/faults.json (tests/conftest.py)."""
from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from delta.tables import DeltaTable

from osmf_core.data import catalog as C
from osmf_core.data import queries
from osmf_core.data.runs import published
from osmf_core.data.ledger import published_in, read_published
from osmf_core.data.store import FAILPOINT, checksum, read_table, table_exists
from tests.test_regroup import CFG

ROOT = Path(__file__).resolve().parent.parent
TABLES = (C.USER_GROUPS, C.GROUPS, C.GROUP_CTR, C.PAIRS)  # metrics hold timings: checked for keys only
EMPTY = (0, 0)
LOG: list[dict] = []


def _flags() -> list[str]:
    return [x for k, v in CFG.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _start(wh: str, model: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "jobs" / "regroup.py"), "--warehouse", wh, "--model", model,
           "--master", "local[2]", "--shuffle-partitions", "2", *_flags(), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and Python workers: a node going away
    except ProcessLookupError:
        pass
    proc.communicate(timeout=120)


def _state(spark, wh: str) -> dict:
    out = {}
    for t in TABLES:
        out[t.fqn] = checksum(read_table(spark, t, wh)) if table_exists(spark, t, wh) else EMPTY
    return out


def _duplicates(spark, wh: str) -> int:
    dup = 0
    for t in (*TABLES, C.METRICS):
        if table_exists(spark, t, wh):
            df = read_table(spark, t, wh)
            dup += df.count() - df.select(*t.key).distinct().count()
    return dup


@pytest.fixture(scope="module")
def clean(spark, paag_wh, paag_model, tmp_path_factory, fault_log):
    """A copy of the tiny world, the state after one clean regroup, and how long that run took."""
    wh = str(tmp_path_factory.mktemp("faults") / "wh")
    shutil.copytree(paag_wh, wh, ignore=shutil.ignore_patterns("gaip"))
    t0 = time.perf_counter()
    _finish(_start(wh, paag_model))
    seconds = time.perf_counter() - t0
    state = _state(spark, wh)
    assert all(v != EMPTY for v in state.values())
    metrics = read_table(spark, C.METRICS, wh).count()
    yield wh, paag_model, state, metrics, seconds
    fault_log["regroup_kills"].extend(LOG)


def _inject(spark, clean, kind: str, how) -> None:
    """Start from empty GAIP tables, kill a run with `how(proc)`, check the half-way state, rerun, compare."""
    wh, model, want, n_metrics, seconds = clean
    shutil.rmtree(Path(wh) / "gaip", ignore_errors=True)
    how(wh, model, seconds)
    after_kill = _state(spark, wh)
    torn = [t for t, v in after_kill.items() if v not in (EMPTY, want[t])]
    assert not torn, f"{kind}: tables neither old nor new after the kill: {torn}"
    _finish(_start(wh, model))
    got = _state(spark, wh)
    lost = sum(max(0, want[t][0] - got[t][0]) for t in want)
    dup = _duplicates(spark, wh)
    metrics_ok = read_table(spark, C.METRICS, wh).count() == n_metrics
    LOG.append({"kind": kind, "tables_written_before_kill": sum(v != EMPTY for v in after_kill.values()),
                "recovered": int(got == want and metrics_ok), "rows_lost": lost, "duplicates": dup})
    assert got == want and metrics_ok and lost == 0 and dup == 0, LOG[-1]


def _kill_after_commit(wh, model, _seconds):
    """Killed right after gaip.groups committed: user_groups and groups are new, the rest not written."""
    proc = _start(wh, model, env={FAILPOINT: C.GROUPS.fqn})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL


def _kill_during_commit(wh, model, _seconds):
    """Killed once the data files of gaip.group_ctr exist, before Delta commits them to the log."""
    proc = _start(wh, model)
    part = Path(wh) / "gaip" / "group_ctr"
    while proc.poll() is None:
        if any(part.glob("run_date=*/*.parquet")):
            _kill(proc)
            return
        time.sleep(0.02)
    pytest.fail("the run ended before gaip.group_ctr's files appeared")


def _kill_at_random(seed: int):
    def how(wh, model, seconds):  # seconds: how long a clean run took
        delay = random.Random(seed).uniform(0.1, 0.6) * seconds  # inside any run's span
        for _ in range(3):  # a machine less busy than during the clean run can finish first: kill earlier then
            proc = _start(wh, model)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return
            delay /= 3
            shutil.rmtree(Path(wh) / "gaip", ignore_errors=True)  # the finished run's tables: start empty again
        pytest.fail("the run ended before its kill, three times")
    return how



def test_killed_after_one_commit_then_rerun(spark, clean):
    _inject(spark, clean, "after gaip.groups commit", _kill_after_commit)


def test_killed_during_a_delta_commit_then_rerun(spark, clean):
    _inject(spark, clean, "during gaip.group_ctr commit", _kill_during_commit)


def test_killed_at_a_random_time_then_rerun(spark, clean):
    _inject(spark, clean, "random time (seed 0)", _kill_at_random(0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_killed_at_more_random_times_then_rerun(spark, clean, seed):
    _inject(spark, clean, f"random time (seed {seed})", _kill_at_random(seed))


def test_a_reader_during_a_write_sees_the_old_or_the_new_version(spark, clean):
    wh, model, want, _, _ = clean
    groups = lambda: checksum(read_table(spark, C.GROUPS, wh))  # noqa: E731
    old = groups()
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(groups())

    proc = _start(wh, model, "--point-users", "6")  # other percentile points: a different groups table
    reader = threading.Thread(target=read)
    reader.start()
    try:
        _finish(proc)
    finally:
        stop.set()
        reader.join()
    new = groups()
    assert new != old and len(seen) >= 2
    assert set(seen) <= {old, new}, "a reader saw a version that is neither the old nor the new table"
    assert read_table(spark, C.GROUPS, wh).groupBy("run_date", "product_id", "group_id").count() \
        .where(F.col("count") > 1).count() == 0


def _answers(spark, wh: str) -> dict:
    return {name: sorted(tuple(r) for r in queries.run_query(spark, name, wh).collect()) for name in queries.names()}


def test_a_run_killed_between_commits_is_invisible_to_every_query(spark, clean):
    """Killed after gaip.user_groups and gaip.groups committed a rerun of the same date with three groups per
    product: the ledger has no row for it, so every query of sql/queries and every reader of the latest run
    still answers from the previous run, consistently across tables; the finished rerun then shows."""
    wh, model, _, _, _ = clean
    before, run = _answers(spark, wh), published_in(spark, wh)
    proc = _start(wh, model, "--k-range", "3-3", env={FAILPOINT: C.GROUPS.fqn})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    latest = checksum(read_table(spark, C.GROUPS, wh))
    assert latest != checksum(read_table(spark, C.GROUPS, wh, version=run.version(C.GROUPS))), \
        "the killed run did not change gaip.groups: the test shows nothing"
    assert published_in(spark, wh) == run  # the killed run is not in the ledger
    assert published(wh) == run  # read without Spark, through the Delta log
    assert _answers(spark, wh) == before
    _finish(_start(wh, model, "--k-range", "3-3"))  # the same run to its end: it shows now
    now = published_in(spark, wh)
    assert now.run_id != run.run_id and now.previous.run_id == run.run_id
    assert now.version(C.GROUPS) == DeltaTable.forPath(spark, C.GROUPS.path(wh)).history(1).first()["version"]
    after = _answers(spark, wh)
    assert checksum(read_table(spark, C.GROUPS, wh)) == latest  # what the killed run had committed
    changed = [name for name in after if after[name] != before[name]]
    assert {"groups_per_category", "group_distinctness", "group_changes_since_last_run"} <= set(changed), changed

    # killed again, then the next run is of another date: it undoes the killed run's commits first, so what
    # it publishes holds this date's groups as the last complete run left them
    day = now.run_date
    groups_of = lambda run: checksum(read_published(spark, C.GROUPS, wh, run).where(F.col("run_date") == day))  # noqa: E731
    complete = groups_of(now)
    proc = _start(wh, model, env={FAILPOINT: C.GROUPS.fqn})  # the default K range: other groups for `day`
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL and checksum(read_table(spark, C.GROUPS, wh)) != latest
    other_day = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    _finish(_start(wh, model, "--run-date", other_day))
    following = published_in(spark, wh)
    assert following.last_run_date == other_day and following.previous.run_id == now.run_id
    assert groups_of(following) == complete
