"""The README's two commands: they lead the README, CI calls the test one, the demo runs end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_tests():
    head = ROOT.joinpath("README.md").read_text().splitlines()[:12]
    commands = [line.strip() for line in head if line.strip().startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]
    ci = ROOT.joinpath(".ci", "run").read_text()
    assert "make test" in ci
    dry = subprocess.run(["make", "-n", "test", f"OSMF_VENV={sys.prefix}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "setup_env.sh" in dry and "pytest" in dry


def test_make_demo_runs_end_to_end_on_a_tiny_world(tmp_path):
    report = tmp_path / "demo.json"
    world = (f"--users 400 --products 14 --impressions-per-user 10 --days 3 --image-size 16 "
             f"--corrupt-fraction 0.01 --warehouse {tmp_path / 'wh'} --report {report} "
             f"--encoders tiny --paag-steps 4 --runs {tmp_path / 'runs'} --stop-after paag")
    # a fresh process, as from a shell: none of the distributed settings this test process may hold
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    out = subprocess.run(["make", "demo", f"WORLD={world}", f"OSMF_VENV={sys.prefix}"], cwd=ROOT,
                         capture_output=True, text=True, env={**env, "CI": "true"}, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(report.read_text())
    assert [s["stage"] for s in data["stages"]] == ["spark_session", "simulate", "paag_features", "train_paag",
                                                    "eval_paag", "summary"]
    assert 0.0 <= data["paag"]["test_auroc"] <= 1.0 and data["paag"]["oracle_auroc"] > 0.55
    assert all(s["seconds"] > 0 for s in data["stages"])
    assert data["summary"]["rows"]["raw.users"] == 400
    assert all(load["rows_in"] == load["accepted"] + load["rejected"] for load in data["loads"])
    assert "OSMF demo" in out.stdout
