"""Loading logs into tables that already hold data: nothing already there is lost or rewritten, copies of
loaded rows are rejected as duplicates, dates and ids are checked for sense, a partial users file keeps
every other user, and files that cannot be read stop in one line before Spark starts.

The tiny world's raw tables (3 days, 2026-11-01..03) are copied and loaded into; the files are written
the way a landing zone holds them (JSON lines, CSV) and read through the ingest job's own reader."""
from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data.ingest import DateWindow, ingest
from osmf_core.data.store import checksum, read_table
from osmf_core.data.landing import IngestConfig, read_input

ROOT = Path(__file__).resolve().parent.parent
RUN = dt.date(2026, 11, 3)  # the tiny world's last day
ATTRS = list(C.USER_ATTRIBUTES)
DUP = "duplicate:impression_id"


@pytest.fixture()
def wh(spark, tiny_world, tmp_path):
    """A copy of the tiny world's raw tables and rejects: a warehouse with data in it."""
    src, _ = tiny_world
    dst = tmp_path / "wh"
    for layer in ("raw", "gaip"):
        shutil.copytree(Path(src) / layer, dst / layer, ignore=shutil.ignore_patterns("user_groups", "groups",
                                                                                        "group_ctr", "pairs"))
    return str(dst)


def _write(path: Path, rows: list, fmt: str = "json") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        lines.append(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(spark, wh: str, table: str, path: Path, fmt: str = "json", run_date: dt.date = RUN, fault_log=None):
    args = IngestConfig(table=table, input=str(path), format=fmt)
    report = ingest(read_input(spark, args), table, wh, run_date, DateWindow(run_date), load_id=path.name)
    if fault_log is not None:
        fault_log["loads"].append({"table": table, "rows_in": report.rows_in, "accepted": report.accepted,
                                   "rejected": report.rejected})
    return report


def _imp(i, u, c, day="2026-11-02", k=0):
    return {"event_date": day, "impression_id": i, "user_id": u, "creative_id": c, "clicked": k}


def _existing(spark, wh, n, seed):
    rows = [r.asDict() for r in read_table(spark, C.IMPRESSIONS, wh).orderBy("impression_id").collect()]
    return random.Random(seed).sample(rows, n)


def _known(spark, wh):
    users = sorted(r.user_id for r in read_table(spark, C.USERS, wh).select("user_id").collect())
    creatives = sorted(r.creative_id for r in read_table(spark, C.CREATIVES, wh).select("creative_id").collect())
    return users, creatives


def _kept_unchanged(spark, wh, before) -> bool:
    """Every row of `before` (a snapshot of the table) is still in the table, unchanged."""
    now = read_table(spark, C.IMPRESSIONS, wh)
    ids = before.select("impression_id")
    return checksum(now.join(ids, "impression_id").select(*C.IMPRESSIONS.column_names)) == checksum(before)


def _scenario(spark, wh, users, creatives):
    """The rows of the issue's scenario, scaled to the tiny world: (rows, expected reason counts, valid rows)."""
    rng = random.Random(0)
    new_id = iter(range(10**15, 10**15 + 10**6))
    valid = []
    for n in range(200):  # 30 of them late: on 2026-11-01, a day already in the table
        day = "2026-11-01" if n < 30 else rng.choice(["2026-11-02", "2026-11-03", "2026-11-04"])
        valid.append(_imp(next(new_id), rng.choice(users), rng.choice(creatives), day, rng.randint(0, 1)))
    copies = [{**r, "event_date": r["event_date"].isoformat()} for r in _existing(spark, wh, 30, 1)]
    moved = [{**r, "event_date": "2026-11-02" if r["event_date"].isoformat() != "2026-11-02" else "2026-11-03"}
             for r in _existing(spark, wh, 20, 2)]
    u, c = users[0], creatives[0]
    future = [_imp(next(new_id), u, c, "2099-01-01") for _ in range(30)]
    negative = [_imp(-(n + 1), u, c) for n in range(10)]
    malformed = [
        (_imp(None, u, c), "null:impression_id"), ({**_imp(next(new_id), u, c), "user_id": None}, "null:user_id"),
        (_imp(next(new_id), 10**14, c), "unknown_user"), (_imp(next(new_id), u, 10**14), "unknown_creative"),
        (_imp(next(new_id), u, c, k=2), "invalid_clicked"), (_imp(next(new_id), u, c, k="yes"), "bad_type:clicked"),
        (_imp(next(new_id), u, c, k=0.5), "bad_type:clicked"), (_imp(next(new_id), "abc", c), "bad_type:user_id"),
        (_imp(99999999999999999999, u, c), "bad_type:impression_id"),
        (_imp(next(new_id), u, c, day="2026-13-45"), "bad_type:event_date"),
        (_imp(next(new_id), u, c, day="1999-01-01"), "out_of_range:event_date"),
        (_imp(next(new_id), u, c, day="ünïcödé"), "bad_type:event_date"),
        (_imp(next(new_id), [u], c), "bad_type:user_id"),
        ({k: v for k, v in _imp(next(new_id), u, c).items() if k != "clicked"}, "null:clicked"),
        ('{"event_date": "2026-11-02", "impression_id": 12, "user_', "unparsable"),
        ("[1, 2, 3]", "unparsable"),
    ]
    rows = valid + copies + moved + future + negative + [r for r, _ in malformed]
    want = {DUP: 50, "out_of_range:event_date": 31, "out_of_range:impression_id": 10}
    for _, reason in malformed:
        if reason != "out_of_range:event_date":
            want[reason] = want.get(reason, 0) + 1
    rng.shuffle(rows)
    return rows, want, valid


def test_the_scenario_loses_nothing_and_rejects_what_it_should(spark, wh, tmp_path, fault_log):
    users, creatives = _known(spark, wh)
    imps = read_table(spark, C.IMPRESSIONS, wh)
    before = imps.localCheckpoint()
    by_day = {r.event_date.isoformat(): r["count"] for r in imps.groupBy("event_date").count().collect()}
    rows, want, valid = _scenario(spark, wh, users, creatives)
    report = _load(spark, wh, "raw.impressions", _write(tmp_path / "in" / "a.json", rows), fault_log=fault_log)

    assert (report.rows_in, report.accepted) == (len(rows), 200)
    assert report.reasons == want
    assert _kept_unchanged(spark, wh, before), "a row already in the table was lost or rewritten"
    after = read_table(spark, C.IMPRESSIONS, wh)
    assert after.count() == before.count() + 200
    late = after.where(F.col("event_date") == F.lit(dt.date(2026, 11, 1))).count()
    assert late == by_day["2026-11-01"] + 30  # late rows join their day, which keeps all it had
    got = {r.impression_id for r in after.where(F.col("impression_id") >= 10**15).collect()}
    assert got == {r["impression_id"] for r in valid}
    rejects = read_table(spark, C.REJECTS, wh).where(F.col("load_id") == "a.json")
    assert rejects.count() == report.rejected

    # the same file again adds nothing: its valid rows are now duplicates of the table
    replay = _load(spark, wh, "raw.impressions", _write(tmp_path / "in" / "a.json", rows), fault_log=fault_log)
    assert replay.accepted == 0 and replay.reasons[DUP] == 250
    assert read_table(spark, C.IMPRESSIONS, wh).count() == before.count() + 200
    # a rerun of one load replaces its rejects: the replay's, not both
    assert read_table(spark, C.REJECTS, wh).where(F.col("load_id") == "a.json").count() == replay.rejected


def test_a_partial_users_file_updates_and_adds_and_keeps_every_other_user(spark, wh, tmp_path, fault_log):
    users = read_table(spark, C.USERS, wh)
    before = users.localCheckpoint()
    n = before.count()
    old = [r.asDict() for r in before.orderBy("user_id").limit(20).collect()]
    changed = [{**r, "age": (r["age"] + 1) % 13} for r in old]
    new = [{"user_id": 10**12 + i, **{a: 1 for a in ATTRS}} for i in range(10)]
    bad = ([{**new[0], "user_id": 10**12 + 100 + i, "age": 1.5} for i in range(10)]
           + [{**new[0], "user_id": 10**12 + 200 + i, "gender": 7} for i in range(10)]
           + [{**new[0], "user_id": -5 - i} for i in range(10)]
           + [{**new[0], "user_id": None} for _ in range(5)])
    report = _load(spark, wh, "raw.users", _write(tmp_path / "u" / "users.json", changed + new + bad),
                   fault_log=fault_log)
    assert (report.rows_in, report.accepted, report.inserted, report.updated) == (65, 30, 10, 20)
    assert report.reasons == {"bad_type:age": 10, "out_of_range:gender": 10, "out_of_range:user_id": 10,
                              "null:user_id": 5}
    after = read_table(spark, C.USERS, wh)
    assert after.count() == n + 10
    ages = {r.user_id: r.age for r in after.where(F.col("user_id").isin([r["user_id"] for r in changed])).collect()}
    assert ages == {r["user_id"]: r["age"] for r in changed}
    untouched = before.join(before.orderBy("user_id").limit(20).select("user_id"), "user_id", "left_anti")
    assert checksum(after.join(untouched.select("user_id"), "user_id").select(*C.USERS.column_names)) \
        == checksum(untouched.select(*C.USERS.column_names))


def _fuzz_rows(rng: random.Random, existing: list[dict], users: list, creatives: list):
    """A few hundred rows of every kind with what should happen to each: (rows, ids that must be added)."""
    rows, valid = [], set()
    new_ids = rng.sample(range(2 * 10**15, 3 * 10**15), 400)
    days = ["2026-10-20", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    for n in range(300):
        kind = rng.choice(["valid", "valid", "valid", "late", "copy", "moved", "batch_dup", "future", "negative",
                           "null", "type", "clicked", "unknown", "junk"])
        i, u, c = new_ids[n], rng.choice(users), rng.choice(creatives)
        if kind in ("valid", "late"):
            row = _imp(i, u, c, "2026-11-01" if kind == "late" else rng.choice(days), rng.randint(0, 1))
            rows.append(row)
            if kind != "batch_dup":
                valid.add(i)
            if rng.random() < 0.15:  # the same row twice in the batch: one kept
                rows.append(dict(row))
        elif kind == "copy":
            e = rng.choice(existing)
            rows.append({**e, "event_date": e["event_date"].isoformat()})
        elif kind == "moved":
            e = rng.choice(existing)
            rows.append({**e, "event_date": rng.choice(days), "clicked": 1 - e["clicked"]})
        elif kind == "batch_dup":
            a = _imp(i, u, c)
            rows += [a, {**a, "clicked": 1}]  # two rows of one id: one kept, one rejected
            valid.add(i)
        elif kind == "future":
            rows.append(_imp(i, u, c, rng.choice(["2026-11-06", "2099-01-01", "9999-12-31"])))
        elif kind == "negative":
            rows.append(_imp(-i, u, c))
        elif kind == "null":
            row = _imp(i, u, c)
            row[rng.choice(list(row))] = None
            rows.append(row)
        elif kind == "type":
            row = _imp(i, u, c)
            row[rng.choice(["user_id", "creative_id", "event_date"])] = rng.choice(
                ["x", 1.5, [1], {"a": 1}, "", "1e999", True])
            rows.append(row)
        elif kind == "clicked":
            rows.append(_imp(i, u, c, k=rng.choice([2, -1, 0.5, "yes", "1.0x"])))
        elif kind == "unknown":
            rows.append(_imp(i, 10**14 + n, c) if rng.random() < 0.5 else _imp(i, u, 10**14 + n))
        else:
            rows.append(rng.choice(['{"event_date": "2026-11-02", "impression_id": ', "not json at all",
                                    "[1, 2]", '{"a": }', "\u00e9\u00e8\u00ea"]))
    rng.shuffle(rows)
    return rows, valid


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_loads_keep_every_row_and_add_each_valid_row_once(spark, wh, tmp_path, seed, fault_log):
    users, creatives = _known(spark, wh)
    before = read_table(spark, C.IMPRESSIONS, wh).localCheckpoint()
    existing = [r.asDict() for r in before.orderBy("impression_id").limit(500).collect()]
    rows, valid = _fuzz_rows(random.Random(seed), existing, users, creatives)
    report = _load(spark, wh, "raw.impressions", _write(tmp_path / f"fuzz{seed}.json", rows), fault_log=fault_log)
    assert report.rows_in == len(rows) == report.accepted + report.rejected
    assert _kept_unchanged(spark, wh, before)
    after = read_table(spark, C.IMPRESSIONS, wh)
    added = after.join(before.select("impression_id"), "impression_id", "left_anti")
    ids = [r.impression_id for r in added.collect()]
    assert len(ids) == len(set(ids)) == report.accepted and set(ids) == valid
    assert read_table(spark, C.REJECTS, wh).where(F.col("load_id") == f"fuzz{seed}.json").count() == report.rejected


# ------------------------------------------------------------------ files that cannot be loaded, and bad flags
def _cli(*args: str, wh: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "ingest.py"), "--warehouse", wh, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


BAD_FILES = {  # file name, bytes, format, what the one line says
    "garbage.json": (bytes(range(256)) * 4, "json", "binary data"),
    "csv_as.json": (b"event_date,impression_id,user_id,creative_id,clicked\n2026-11-02,1,1,1,0\n", "json",
                    "not JSON lines"),
    "empty.json": (b"", "json", "empty file"),
    "blank.json": (b"\n  \n\n", "json", "no JSON lines"),
    "no_clicked.json": (b'{"event_date": "2026-11-02", "impression_id": 5, "user_id": 1, "creative_id": 1}\n',
                        "json", "clicked missing"),
    "no_clicked.csv": (b"event_date,impression_id,user_id,creative_id\n2026-11-02,5,1,1\n", "csv", "clicked missing"),
    "json_as.parquet": (b'{"a": 1}\n', "parquet", "not a Parquet file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_file_that_cannot_be_loaded_stops_in_one_line_before_spark(wh, tmp_path, name):
    data, fmt, says = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    p = _cli("--table", "raw.impressions", "--input", str(tmp_path / name), "--format", fmt, "--run-date",
             RUN.isoformat(), wh=wh)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-2000:]
    assert p.stderr.startswith(f"ingest: {tmp_path / name}: ") and says in p.stderr, p.stderr


def test_a_warehouse_that_does_not_exist_is_one_line(tmp_path):
    f = _write(tmp_path / "a.json", [_imp(1, 1, 1)])
    p = _cli("--table", "raw.impressions", "--input", str(f), "--format", "json", wh=str(tmp_path / "nope"))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"ingest: --warehouse {tmp_path / 'nope'} does not exist (make simulate, or create the folder for a first "
        "load of users and products)"]


def test_a_whole_load_through_the_job(wh, tmp_path):
    """The job end to end in its own process: a JSON file with a late row, a copy of a loaded row and a
    truncated line."""
    f = _write(tmp_path / "job" / "part-0.json", [_imp(7 * 10**15, 0, 0, "2026-11-01"), "{\"event_date\": \"20",
                                                  _imp(7 * 10**15, 0, 0, "2026-11-02")])
    p = _cli("--table", "raw.impressions", "--input", str(f.parent), "--format", "json", "--run-date",
             RUN.isoformat(), "--master", "local[1]", "--shuffle-partitions", "2", wh=wh)
    assert p.returncode == 0, p.stderr[-3000:]
    assert ("raw.impressions: 3 rows in = 1 accepted + 2 rejected (duplicate:impression_id=1, unparsable=1); "
            "1 inserted, 0 updated") in p.stdout
