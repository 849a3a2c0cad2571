"""Every job checks its configuration first: a missing table, a run date the table does not have or a bad
value stops it with one `job: ...` line on stderr and exit code 2, before any work."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from osmf_core.data import catalog as C

REPO = Path(__file__).resolve().parents[1]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(stderr: str, job: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith(f"{job}: ")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.fixture
def empty(tmp_path):
    """An empty warehouse, and model folders that exist, so that the missing table is what stops a job."""
    for d in ("gmllm", "grm", "grm_no_group", "gmllm_no_group"):
        (tmp_path / d).mkdir()
    (tmp_path / "paag.pt").write_bytes(b"")
    return tmp_path


# job, its flags (beyond --warehouse), the table it must name
NO_SPARK = [
    ("train_paag", [], "feat.title_tokens"),
    ("paag_ablation", [], "feat.title_tokens"),
    ("paag_baselines", [], "feat.title_tokens"),
    ("paag_probe", ["--model", "{d}/paag.pt"], "raw.users"),
    ("pretrain_gmllm", [], "feat.instructions"),
    ("train_grm", ["--gmllm", "{d}/gmllm"], "feat.grm_examples"),
    ("group_dpo", ["--gmllm", "{d}/gmllm", "--grm", "{d}/grm"], "feat.instructions"),
    ("eval_grm", ["--gmllm", "{d}/gmllm"], "feat.grm_examples"),
    ("eval_online", ["--gmllm", "{d}/gmllm", "--grm", "{d}/grm", "--grm-no-group", "{d}/grm_no_group",
                     "--gmllm-no-group", "{d}/gmllm_no_group"],
     "feat.instructions"),
]


@pytest.mark.parametrize("job,flags,table", NO_SPARK, ids=[j for j, _, _ in NO_SPARK])
def test_a_training_job_names_the_missing_table_in_one_line(job, flags, table, empty, capsys):
    rc = _job(job).main(["--warehouse", str(empty), *[f.format(d=empty) for f in flags]])
    line = _one_line(capsys.readouterr().err, job)
    assert rc == 2
    assert f"{table}: no Delta table at {empty}" in line


@pytest.mark.parametrize("job,table", [("train_grm", "feat.grm_examples"), ("group_dpo", "feat.instructions"),
                                       ("pretrain_gmllm", "feat.instructions")])
def test_a_run_date_the_table_does_not_have_is_refused(job, table, tiny_models, capsys):
    wh, gmllm, grm = tiny_models
    flags = {"train_grm": ["--gmllm", gmllm], "group_dpo": ["--gmllm", gmllm, "--grm", grm]}.get(job, [])
    rc = _job(job).main(["--warehouse", wh, "--run-date", "1999-01-01", *flags])
    line = _one_line(capsys.readouterr().err, job)
    assert rc == 2
    assert f"--run-date 1999-01-01: {table} has no run of that date" in line


def test_eval_online_refuses_repeated_seeds_and_unknown_methods(empty, capsys):
    flags = ["--warehouse", str(empty), "--gmllm", str(empty / "gmllm"), "--grm", str(empty / "grm"),
             "--grm-no-group", str(empty / "grm_no_group")]
    assert _job("eval_online").main([*flags, "--seeds", "0,1,0"]) == 2
    assert "--seeds must be distinct integers, got '0,1,0'" in _one_line(capsys.readouterr().err, "eval_online")
    assert _job("eval_online").main([*flags, "--methods", "pretrained,oracle_per_user"]) == 2
    assert "unknown methods ['oracle_per_user']" in _one_line(capsys.readouterr().err, "eval_online")


def test_eval_online_needs_the_no_group_gmllm_only_for_osmf_no_group(empty, capsys):
    """OSMF without group starts from a G-MLLM pre-trained without the group token: asked for, a missing one is
    the one-line error; not asked for, it is not needed (the job goes on to the missing table)."""
    flags = ["--warehouse", str(empty), "--gmllm", str(empty / "gmllm"), "--grm", str(empty / "grm"),
             "--grm-no-group", str(empty / "grm_no_group"), "--gmllm-no-group", str(empty / "absent")]
    assert _job("eval_online").main([*flags, "--methods", "pretrained,osmf_no_group"]) == 2
    assert f"no gmllm_no_group at {empty / 'absent'}" in _one_line(capsys.readouterr().err, "eval_online")
    assert _job("eval_online").main([*flags, "--methods", "pretrained,one_size,osmf"]) == 2
    assert "feat.instructions: no Delta table" in _one_line(capsys.readouterr().err, "eval_online")


def test_bad_values_stop_before_spark_starts(tmp_path, capsys):
    assert _job("simulate").main(["--users", "0", "--warehouse", str(tmp_path)]) == 2
    assert _one_line(capsys.readouterr().err, "simulate") == "simulate: users must be >= 1, got 0"
    assert _job("ingest").main(["--table", "raw.users", "--input", str(tmp_path / "nothing"),
                                "--warehouse", str(tmp_path)]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err, "ingest")
    assert not any(tmp_path.iterdir())  # nothing written


def test_spark_jobs_name_the_missing_table_in_one_line(empty):
    """Spark jobs as a shell runs them (each its own Spark session): paag_features, eval_groups, generate."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for job, flags, table in (("paag_features", [], "raw.products"), ("eval_groups", [], "gaip.user_groups"),
                              ("generate", ["--gmllm", str(empty / "gmllm"), "--dpo="], "feat.instructions")):
        proc = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), "--warehouse", str(empty),
                               "--master", "local[1]", *flags], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"{table}: no Delta table at {empty}" in _one_line(proc.stderr, job)
    assert sorted(p.name for p in empty.iterdir()) == ["gmllm", "gmllm_no_group", "grm", "grm_no_group", "paag.pt"]


def test_a_model_file_of_garbage_bytes_is_one_line_before_spark(tmp_path, capsys):
    (tmp_path / "paag.pt").write_bytes(bytes(range(256)) * 8)
    assert _job("regroup").main(["--model", str(tmp_path / "paag.pt"), "--warehouse", str(tmp_path)]) == 2
    line = _one_line(capsys.readouterr().err, "regroup")
    assert line.startswith(f"regroup: --model {tmp_path / 'paag.pt'} is not a PAAG model file (")
    assert [p.name for p in tmp_path.iterdir()] == ["paag.pt"]  # nothing written, no Spark warehouse made


@pytest.mark.parametrize("job,flags,table", [NO_SPARK[0], NO_SPARK[4], NO_SPARK[5], NO_SPARK[6]],
                         ids=["train_paag", "pretrain_gmllm", "train_grm", "group_dpo"])
def test_training_jobs_read_the_warehouse_the_spark_jobs_write(job, flags, table, empty, monkeypatch, capsys):
    """$OSMF_WAREHOUSE, honoured by every Spark job, is also the training jobs' default warehouse."""
    monkeypatch.setenv("OSMF_WAREHOUSE", str(empty))
    monkeypatch.chdir(empty / "gmllm")  # ./warehouse would be somewhere else
    rc = _job(job).main([f.format(d=empty) for f in flags])
    assert rc == 2
    assert f"{table}: no Delta table at {C.table(table).path(str(empty))} " in _one_line(capsys.readouterr().err, job)


def _dry_run(target: str, warehouse: Path) -> str:
    env = {**os.environ, "OSMF_WAREHOUSE": str(warehouse)}
    return subprocess.run(["make", "-n", "--no-print-directory", target], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120).stdout


def test_eval_groups_evaluates_the_published_run_and_regroups_only_when_there_is_none(tmp_path):
    assert "jobs/regroup.py" in _dry_run("eval-groups", tmp_path)  # no regroup run yet: one first
    (tmp_path / "gaip" / "runs").mkdir(parents=True)
    out = _dry_run("eval-groups", tmp_path)
    assert "jobs/eval_groups.py" in out and "jobs/regroup.py" not in out
    for f in ("nightly.sh", "osmf_nightly_dag.py"):  # the nightly chain evaluates on the cluster, never via make
        assert "make eval-groups" not in (REPO / "cluster" / "schedule" / f).read_text()
