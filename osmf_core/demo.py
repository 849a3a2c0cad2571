"""The OSMF pipeline end to end on the embedded default: local Spark, local Delta warehouse,
the simulated ad world, small models. Stages: simulate (raw tables), encoder features and training rows,
a short PAAG training with DeepSpeed (single CPU process) and its held-out AUROC, the nightly regroup
(GAIP tables), the G-MLLM instruction rows, a short G-MLLM pre-training, a short GRM training, one round
of Group-DPO, and generation: one image per (product, group) into the gen tables and the HTML gallery.
Every model here is trained briefly; the make targets train them fully.

Writes reports/demo.json: each stage it ran and its wall time in seconds.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from osmf_core.data import catalog as C
from osmf_core.data.config import SparkSettings
from osmf_core.data.reader import FeatureBank
from osmf_core.data.reports import write_report
from osmf_core.data.spark import build_spark, with_job_conf
from osmf_core.data.store import read_table, register_tables
from osmf_core.evaluation.online import simulated_ctr
from osmf_core.features import encode as features
from osmf_core.features import instructions as curation
from osmf_core.generation import pipeline as generation
from osmf_core.grouping import regroup
from osmf_core.models.paag import PAAGConfig, load_model
from osmf_core.training.dpo import DPOConfig, run_group_dpo
from osmf_core.training.gmllm import MODEL_SUBDIR, PretrainConfig, pretrain
from osmf_core.training.grm import GRMConfig, train_grm
from osmf_core.training.paag import MODEL_FILE, TrainConfig, auroc, predict, train
from osmf_core.world.simulate import SimulateConfig, simulate_world
from osmf_core.world.truth import Truth


@dataclass
class DemoConfig:
    world: SimulateConfig = field(default_factory=SimulateConfig)
    report: str = "reports/demo.json"  # where to write the stage timings and figures
    # pretrained: MobileNetV2 + MiniLM; tiny: small random encoders
    encoders: str = field(default="pretrained", metadata={"choices": ("pretrained", "tiny")})
    paag_steps: int = 400  # PAAG training steps in the demo
    runs: str = "runs/demo"  # where model checkpoints go
    gmllm_steps: int = 300  # G-MLLM pre-training steps in the demo
    grm_steps: int = 150  # GRM training steps in the demo
    gallery: str = "reports/gallery/index.html"  # the generation gallery page
    # paag: only the raw tables and PAAG; regroup: also the GAIP tables; generate: every stage
    stop_after: str = field(default="generate", metadata={"choices": ("paag", "regroup", "generate")})


def run_demo(args: DemoConfig, settings: SparkSettings) -> dict:
    """Every stage, briefly, on the world of `args.world`; prints the summary, writes the report, returns it."""
    cfg, wh = args.world, settings.warehouse
    stages = Stages()
    # one session serves every stage: it starts with the regroup's own settings (regroup.SPARK_CONF), under
    # the given ones, as `python jobs/regroup.py` would
    spark = stages.run("spark_session", lambda: build_spark(with_job_conf(settings, regroup.SPARK_CONF)))
    result = stages.run("simulate", lambda: simulate_world(spark, cfg, wh))
    stages[-1]["steps"] = result.seconds

    image_enc, text_enc = ("mobilenet_v2", "minilm") if args.encoders == "pretrained" else ("tiny", "tiny")
    fcfg = features.FeatureConfig(image_encoder=image_enc, text_encoder=text_enc)
    split_rows = stages.run("paag_features", lambda: features.build_features(spark, fcfg, wh))

    tcfg = TrainConfig(warehouse=wh, text_encoder=text_enc, image_encoder=image_enc,
                       model=PAAGConfig(), max_steps=args.paag_steps, epochs=1, out_dir=f"{args.runs}/paag",
                       save_every=max(args.paag_steps // 2, 1))
    shutil.rmtree(tcfg.out_dir, ignore_errors=True)  # the demo trains from scratch every time
    stages.run("train_paag", lambda: train(tcfg))

    def eval_paag() -> dict:
        model, _ = load_model(f"{tcfg.out_dir}/{MODEL_FILE}")
        scores, labels, rows = predict(model, FeatureBank.load(wh, text_enc, image_enc), wh, "test")
        oracle = Truth.from_warehouse(wh).click_probability(rows, rows["creative_id"])
        return {"test_auroc": auroc(scores, labels), "oracle_auroc": auroc(oracle, labels),
                "steps": args.paag_steps, "examples": split_rows}
    paag = stages.run("eval_paag", eval_paag)

    later = {}
    if args.stop_after != "paag":
        later = pipeline_after_paag(spark, args, wh, f"{tcfg.out_dir}/{MODEL_FILE}", stages)

    def rejects_by_reason() -> dict:
        register_tables(spark, C.TABLES, wh)
        rejects = read_table(spark, C.REJECTS, wh).groupBy("source", "reason").count().orderBy("source", "reason")
        return {f"{r['source']} {r['reason']}": r["count"] for r in rejects.collect()}
    by_reason = stages.run("summary", rejects_by_reason)
    spark.stop()

    s = result.summary
    print("\n=== OSMF demo: simulated ad world ===")
    print(f"warehouse: {wh}")
    for name, n in s["rows"].items():
        print(f"  {name:<18} {n:>10,} rows")
    print(f"  overall CTR        {s['ctr']:.4f}")
    for cat, ctr in s["ctr_by_category"].items():
        print(f"    {cat:<18} CTR {ctr:.4f}")
    for r in result.reports:
        print(f"  load {r.line()}")
    print(f"  quarantined rows by reason: {by_reason or 'none'}")
    print(f"  PAAG ({args.paag_steps} steps, {args.encoders} encoders): held-out AUROC {paag['test_auroc']:.4f}, "
          f"oracle {paag['oracle_auroc']:.4f}")
    for line in later.get("lines", []):
        print(f"  {line}")
    for st in stages:
        print(f"  stage {st['stage']:<14} {st['seconds']:>8.1f}s")

    report = {"stages": stages, "summary": s, "paag": paag, "loads": [r.__dict__ for r in result.reports],
              **{k: v for k, v in later.items() if k != "lines"}}
    write_report(args.report, report)
    return report


class Stages(list):
    """The stages the demo ran, each with its wall time in seconds."""

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        self.append({"stage": name, "seconds": round(time.perf_counter() - t0, 3)})
        return out


def pipeline_after_paag(spark, args: DemoConfig, warehouse: str, paag_model: str, stages: Stages) -> dict:
    """Regroup, instructions, G-MLLM, GRM, one Group-DPO round and generation, each briefly."""
    stage = stages.run
    quiet = lambda *_: None  # noqa: E731
    groups = stage("regroup", lambda: regroup.regroup(spark, regroup.RegroupConfig(model=paag_model), warehouse))
    out = {"regroup": {k: v for k, v in groups.items() if k != "config"},
           "lines": [f"regroup {groups['run_date']}: {groups['products_grouped']} products -> {groups['groups']} groups "
                     f"(mean K* {groups['mean_k_star']:.2f}, mean silhouette {groups['mean_silhouette']:.3f}), "
                     f"{groups['pairs']:,} pairs"]}
    if args.stop_after == "regroup":
        return out
    instr = stage("instructions", lambda: curation.build_instructions(spark, curation.CurationConfig(), warehouse))
    if not instr["grm_examples"].get("train"):
        out["lines"].append("no GRM training pairs in this world (too few impressions per creative and group): "
                            "the demo stops after the instruction rows")
        return out
    gm, grm, dpo = (f"{args.runs}/{d}" for d in ("gmllm", "grm", "dpo"))
    for d in (gm, grm, dpo):  # the demo trains from scratch every time
        shutil.rmtree(d, ignore_errors=True)
    pre = stage("pretrain_gmllm", lambda: pretrain(PretrainConfig(warehouse=warehouse, max_steps=args.gmllm_steps,
                                                                   out_dir=gm, save_every=args.gmllm_steps)))
    rm = stage("train_grm", lambda: train_grm(GRMConfig(warehouse=warehouse, gmllm=f"{gm}/{MODEL_SUBDIR}", out_dir=grm,
                                                        max_steps=args.grm_steps, save_every=args.grm_steps)))
    dp = stage("group_dpo", lambda: run_group_dpo(DPOConfig(warehouse=warehouse, gmllm=f"{gm}/{MODEL_SUBDIR}",
                                                            grm=f"{grm}/{MODEL_SUBDIR}", rounds=1, out_dir=dpo)))
    gen = stage("generate", lambda: generation.generate_creatives(spark, generation.GenerateConfig(
        gmllm=f"{gm}/{MODEL_SUBDIR}", dpo=dpo, gallery=args.gallery), warehouse, log=quiet,
        simulated_ctr=simulated_ctr(warehouse)))
    r0 = dp["rounds"][0]
    out.update(instructions=instr, gmllm={"steps": pre["step"], "task_loss": pre["task_loss"]},
               grm={"steps": rm["step"], "loss": rm["loss"]}, group_dpo=r0["after"], generate=gen)
    out["lines"] += [f"instructions: {instr['instructions']}; GRM pairs {instr['grm_examples']}",
                     f"G-MLLM ({pre['step']} steps) response loss per task: {pre['task_loss']}",
                     f"GRM ({rm['step']} steps): loss {rm['loss']:.4f}",
                     f"Group-DPO (1 round, {r0['pairs']} pairs): implicit-reward accuracy "
                     f"{r0['after']['reward_accuracy']:.3f}, margin {r0['after']['reward_margin']:.4f}",
                     f"generate: {gen['images']} images for {gen['products']} products, mean simulated CTR "
                     f"{gen['mean_sim_ctr']:.5f} (the one-size image in the same groups: {gen['mean_one_size_ctr']:.5f}); "
                     f"gallery {gen['gallery']}"]
    return out
