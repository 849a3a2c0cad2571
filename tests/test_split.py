"""Held out means held out of every training stream: no held-out product, creative or group reaches G-MLLM
pre-training, the GRM's pairs or Group-DPO's contexts, and no training code can read the simulator's truth."""
from __future__ import annotations

import ast
from pathlib import Path

from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.data.reader import read_columns
from osmf_core.data.store import read_table
from osmf_core.features.contexts import load_contexts
from osmf_core.features.split import held_out_partition
from osmf_core.training.gmllm import training_rows
from osmf_core.training.grm import training_pairs

ROOT = Path(__file__).resolve().parents[1]


def _products(batches) -> set[int]:
    return {int(p) for b in batches for p in b["product_id"]}


def _held_out(wh: str, run_date: str) -> set[int]:
    return _products(read_columns(C.INSTRUCTIONS, wh, ["product_id"], held_out_partition(run_date)))


def test_no_held_out_product_reaches_a_training_stream(spark, instructions_wh):
    wh, summary = instructions_wh
    day = summary["run_date"]
    held = _held_out(wh, day)
    every = {r["product_id"] for r in read_table(spark, C.INSTRUCTIONS, wh).where(F.col("run_date") == day)
             .select("product_id").distinct().collect()}
    assert held and held < every  # some products are held out, not all
    pretraining = _products(training_rows(wh, day, batch_size=1, seed=0))
    grm_pairs = _products(training_pairs(wh, day, batch_size=1, seed=0))
    dpo_contexts = set(load_contexts(wh, day, split="train")["product_id"])
    assert pretraining == every - held  # every other product's rows are trained on
    assert grm_pairs and not grm_pairs & held
    assert dpo_contexts and not dpo_contexts & held
    # the evaluation's side: the held-out contexts are exactly the held-out products' (product, group) rows
    test = load_contexts(wh, day, split="test")
    assert set(test["product_id"]) == held
    groups = {(r["product_id"], r["group_id"]) for r in read_table(spark, C.GROUPS, wh)
              .where((F.col("run_date") == day) & F.col("product_id").isin(sorted(held))).collect()}
    assert set(zip(test["product_id"], test["group_id"])) == groups


def test_instructions_and_pairs_agree_on_every_products_split(spark, instructions_wh):
    wh, summary = instructions_wh
    on_day = F.col("run_date") == summary["run_date"]
    instr = {(r["product_id"], r["split"]) for r in read_table(spark, C.INSTRUCTIONS, wh).where(on_day)
             .select("product_id", "split").distinct().collect()}
    pairs = {(r["product_id"], r["split"]) for r in read_table(spark, C.GRM_EXAMPLES, wh).where(on_day)
             .select("product_id", "split").distinct().collect()}
    assert len({p for p, _ in instr}) == len(instr)  # one split per product
    assert pairs <= instr


def _imports_truth(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "osmf_core.world.truth" or (
                    node.module == "osmf_core.world" and any(a.name == "truth" for a in node.names)):
                return True
        if isinstance(node, ast.Import) and any(a.name == "osmf_core.world.truth" for a in node.names):
            return True
    return False


def test_no_training_or_model_code_can_import_the_simulators_truth():
    """Only the simulator and the evaluation read the truth; generation and Group-DPO get it passed in."""
    assert _imports_truth("from osmf_core.world.truth import Truth") and _imports_truth("from osmf_core.world import truth")
    readers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "osmf_core").rglob("*.py") if _imports_truth(p.read_text()))
    allowed = ("osmf_core/world/", "osmf_core/evaluation/", "osmf_core/demo.py")
    assert [r for r in readers if not r.startswith(allowed)] == []
