"""bench_gmllm: the exported sample, and the figures of a timed run (tokens, FLOPs, MFU) against what they
must be, on the tiny profile with a real DeepSpeed engine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from osmf_core.evaluation.benchmarks import gmllm
from osmf_core.evaluation.benchmarks.gmllm import ExportConfig
from osmf_core.evaluation.benchmarks.gmllm_export import export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(instructions_wh, tmp_path_factory):
    wh, summary = instructions_wh
    out = tmp_path_factory.mktemp("bench_rows")
    return export(ExportConfig(warehouse=wh, out=str(out), rows=40, pairs=12, seed=0)), out, summary


def test_export_samples_the_tables_with_grm_instructions(rows):
    from osmf_core.models.gmllm.grm import grm_instruction
    got, out, _ = rows
    pre, grm = pd.read_parquet(out / gmllm.PRETRAIN_FILE), pd.read_parquet(out / gmllm.GRM_FILE)
    assert (got["pretrain_rows"], got["grm_pairs"]) == (len(pre), len(grm)) == (40, 12)
    assert list(grm["instruction"]) == [grm_instruction(t) for t in grm["title"]]
    assert set(pre["task"]) <= {"group_analysis", "behavioral_prediction", "product_understanding",
                                "prompt_generation", "creative_captioning"}
    widths = {len(f) for f in grm["group_features"]}
    assert len(widths) == 1 and widths.pop() > 0  # every pair is in a group, all of one width


def _cfg(out, phase, **kw):
    return gmllm.OneConfig(**{**dict(rows=str(out), batch_size=4, steps=3, warmup=1, distinct_batches=2,
                                     peak_tflops=0.5, phase=phase), **kw})


@pytest.mark.parametrize("phase", ["pretrain", "grm"])
def test_a_timed_run_counts_tokens_flops_and_mfu(rows, phase, capfd):
    _, out, _ = rows
    r = gmllm.run_one(_cfg(out, phase))
    # its stages, in order, on stderr: a run stopped at its time limit is reported with the last one
    err = capfd.readouterr().err
    stages = [ln.split()[1] for ln in err.splitlines() if ln.startswith("STAGE ")]
    assert stages == ["build", "flops", "engine", "warmup", "timed"]
    starts = list(r["stages_started_s"].values())  # and in the row, in seconds from the start, ending with its end
    assert list(r["stages_started_s"]) == ["build", "flops", "engine", "warmup", "timed steps", "end"]
    assert starts == sorted(starts) and starts[0] < 1
    assert gmllm.last_stage(err).startswith(", in timed steps (from ")
    assert r["engine"]["zero_stage"] == 0 and r["variant"] == "jobs"  # one process: the jobs' engine has no ZeRO
    # tokens: the non-padding positions of the batches the timed steps cycled over (steps 1..3 of 0..3)
    base = gmllm.build("tiny", out, "", 0)
    batches = [gmllm.encode_rows(base, phase, b) for b in gmllm.sampled_batches(phase, out, 4, 2, 0)]
    timed = [batches[i % 2] for i in range(1, 4)]
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    assert r["tokens_per_s"] * r["step_s"] * r["steps"] == pytest.approx(tokens, rel=1e-9)
    assert r["rows_per_step"] == (4 if phase == "pretrain" else 8)  # a GRM step reads both images of 4 pairs
    # FLOPs of one forward + backward: every linear layer of the language model costs 6 FLOPs per weight per
    # position (forward 2, input and weight gradients 4); attention, vision and the group MLP come on top
    lm = base.llava.model.language_model
    linear = sum(m.weight.numel() for m in lm.modules() if m.__class__.__name__ == "Linear")
    linear += base.llava.lm_head.weight.numel() if phase == "pretrain" else 0  # the GRM reads hidden states
    positions = sum(b["attention_mask"].numel() for b in timed) / 3  # mean positions of a timed step
    assert 6 * linear * positions <= r["flops_per_step"] <= 3 * 6 * linear * positions
    assert r["mfu"] == pytest.approx(r["flops_per_step"] / r["step_s"] / 0.5e12)
    assert r["trainable_params"] < r["params"] if phase == "grm" else r["trainable_params"] == r["params"]
    assert np.isfinite(r["loss_last"])


@pytest.mark.parametrize("phase", ["pretrain", "grm"])
def test_flops_counted_in_chunks_add_up_to_the_whole_batch(rows, phase):
    """Counting a row (a pair) at a time, each padded to the batch's width, gives the whole batch's count: the
    bench needs the memory of one chunk, not of a full-precision pass over the batch."""
    from osmf_core.models.gmllm.grm import GRM
    _, out, _ = rows
    base = gmllm.build("tiny", out, "", 0)
    model = base if phase == "pretrain" else GRM(base, use_group=True, pooling="bilinear")
    b = gmllm.sampled_batches(phase, out, 6, 1, 3)[0]
    width = gmllm.encode_rows(base, phase, b)["input_ids"].shape[1]
    whole = gmllm.count_flops(model, base, phase, b, width, 6, "cpu")
    assert whole > 0
    assert gmllm.count_flops(model, base, phase, b, width, 1, "cpu") == whole
    assert gmllm.count_flops(model, base, phase, b, width, 4, "cpu") == whole  # chunks of 4 and 2
    assert gmllm.count_flops(model, base, phase, b, width + 16, 6, "cpu") > whole  # padding is computed too


def test_the_cli_prints_the_table_and_writes_the_report(rows, tmp_path):
    _, out, _ = rows
    report = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "bench_gmllm.py"), "run", "--rows", str(out),
                           "--phases", "grm", "--variants", "zero2,jobs", "--batch-size", "2", "--steps", "1",
                           "--warmup", "1", "--report", str(report), "--profile-dir", str(tmp_path / "prof")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x tokens/s" in proc.stdout and "grm           2 zero2" in proc.stdout
    # each run's profile of 3 steps after its timed one: wall and busy time a step, then the operators
    for variant in ("zero2", "jobs"):
        head, table = (tmp_path / "prof" / f"grm_b2_{variant}.txt").read_text().split("\n", 1)
        wall, busy = (float(head.split(w)[1].split()[0]) for w in ("wall ", "CPU busy "))
        assert head.startswith("3 profiled steps: wall ") and 0 < busy <= wall * 1.05
        assert "aten::" in table and "Self CPU" in table
    got = json.loads(report.read_text())
    assert got["baseline"] == "zero2" and [r["variant"] for r in got["results"]] == ["zero2", "jobs"]
    assert [r["engine"]["zero_stage"] for r in got["results"]] == [2, 0]
    assert set(got["versions"]) == {"torch", "deepspeed", "transformers", "cuda"}
    # the second variant reads the first one's FLOP count (the same batches): counted once, the same figure
    assert [r["flops_from"] for r in got["results"]] == ["counted", "cache"]
    assert got["results"][0]["flops_per_step"] == got["results"][1]["flops_per_step"] > 0


def test_a_flop_cache_serves_the_same_batches_only(rows, tmp_path):
    """--flop-cache keeps counts across benches: a run of the same shape, phase, batches and rows reads it; another
    batch size counts its own, and the file then holds both."""
    _, out, _ = rows
    cache = tmp_path / "flops.json"
    first = gmllm.run_one(_cfg(out, "grm", flop_cache=str(cache), variant="eager"))
    again = gmllm.run_one(_cfg(out, "grm", flop_cache=str(cache)))
    other = gmllm.run_one(_cfg(out, "grm", flop_cache=str(cache), batch_size=3))
    assert (first["flops_from"], again["flops_from"], other["flops_from"]) == ("counted", "cache", "counted")
    assert first["flops_per_step"] == again["flops_per_step"] != other["flops_per_step"]
    assert len(json.loads(cache.read_text())) == 2


def test_export_from_a_warehouse_without_the_tables_stops_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "bench_gmllm.py"), "export", "--warehouse", str(tmp_path),
                           "--out", str(tmp_path / "rows")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_gmllm: feat.instructions: no Delta table at")
    assert not (tmp_path / "rows").exists()  # nothing half-written


def test_missing_rows_stop_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "bench_gmllm.py"), "run", "--rows", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "run `python jobs/bench_gmllm.py export` first" in proc.stderr


def test_the_model_and_its_inputs_import_without_the_data_stack():
    """A GPU node runs the G-MLLM without Spark, Delta or petastorm: blocked imports must not be needed."""
    code = ("import sys\nfor m in ('pyspark', 'delta', 'deltalake', 'petastorm'): sys.modules[m] = None\n"
            "import osmf_core.models.gmllm.model as g\nassert g.IMAGE_TOKEN == '<image>' and callable(g.encode)\n"
            "import bench_gmllm\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'jobs'}"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-1500:]


def test_a_smollm2_shape_has_the_published_layer_sizes():
    """SmolLM2-135M: 30 layers of attention (q, o 576x576; k, v 576x192 with 3 KV heads), a SwiGLU MLP of
    1536 and two norms: 106,202,880 weights outside the embeddings and the final norm; with `layers`, that many
    of the same layers."""
    from osmf_core.models.gmllm.builders import build_small_shape
    from osmf_core.models.gmllm.model import GMLLMConfig
    from osmf_core.models.gmllm.tokens import train_tokenizer
    tok = train_tokenizer(["a small corpus for a tokenizer"] * 4, vocab_size=300)
    model = build_small_shape(GMLLMConfig(group_dim=8), "smollm2-135m", tok)
    layers = model.llava.model.language_model.layers
    assert len(layers) == 30 and sum(p.numel() for p in layers.parameters()) == 106_202_880
    assert model.llava.get_input_embeddings().weight.shape == (len(tok), 576)
    assert model.n_image_tokens == 16  # 128 px through MobileNetV2's stride 32
    shallow = build_small_shape(GMLLMConfig(group_dim=8), "smollm2-135m", tok, layers=2).llava.model.language_model
    shallow = shallow.layers
    assert len(shallow) == 2 and sum(p.numel() for p in shallow.parameters()) == 106_202_880 // 15
    with pytest.raises(ValueError, match="shape must be one of"):
        build_small_shape(GMLLMConfig(), "smollm2-9b", tok)
    with pytest.raises(ValueError, match="layers must be >= 0"):
        build_small_shape(GMLLMConfig(), "smollm2-135m", tok, layers=-1)


def test_a_stopped_run_names_the_stage_it_was_in():
    err = "noise\nSTAGE build 0\nSTAGE flops 12\nSTAGE warmup (compiles) 31\nTraceback ...\n"
    assert gmllm.last_stage(err) == ", in warmup (compiles) (from 31 s)"
    assert gmllm.last_stage("no stage lines") == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a device that fails: a CPU machine's cuda")
def test_a_shape_whose_device_fails_is_built_on_the_cpu(rows, tmp_path, capfd):
    """A GPU draws a SmolLM2 shape's random weights (a minute on a CPU for 1.7B); where that fails, the CPU."""
    from osmf_core.models.gmllm.tokens import train_tokenizer
    _, out, _ = rows
    train_tokenizer(["a small corpus for a tokenizer"] * 4, vocab_size=300).save_pretrained(tmp_path)
    model = gmllm.build("smollm2-135m", out, str(tmp_path), 0, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert len(model.llava.model.language_model.layers) == 30
    assert "building on cuda failed" in capfd.readouterr().err


def test_the_gpu_script_runs_its_targets_in_order_with_the_flags_the_bench_takes(tmp_path):
    """cluster/bench_gmllm_gpu.sh, with a stand-in for Python that records its arguments and exits: the five
    runs in their order of priority, each a `run` of bench_gmllm.py whose flags the bench's parser accepts
    (a typo there would cost a GPU session), each with its report and a time limit within the budget."""
    stub, calls = tmp_path / "python", tmp_path / "calls.txt"
    stub.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    stub.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "cluster/bench_gmllm_gpu.sh", "ROWS", "TOK", str(out), "600"], cwd=ROOT,
                          env={**os.environ, "PYTHON": str(stub)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = [line.split() for line in calls.read_text().splitlines()]
    assert [r[r.index("--report") + 1].rsplit("/", 1)[1] for r in runs] == [
        "pre17_b16.json", "pre135_b64.json", "grm17_b32.json", "pre135_b128.json", "pre17_b32.json"]
    from osmf_core.data.flags import job_parser
    ap = job_parser("")
    gmllm.add_args(ap, gmllm.BenchConfig)
    for r in runs:
        assert r[:2] == ["jobs/bench_gmllm.py", "run"]
        args = ap.parse_args(r[2:])
        assert args.rows == "ROWS" and args.tokenizer == "TOK" and 60 <= args.run_timeout <= 600
    assert "done in" in (out / "log.txt").read_text()
