"""`make evaluate`: the paper's headline results, measured on several evaluation worlds (never the development
world) and several training seeds each, with a progress line per stage.

Per world seed, in its own folder <out_dir>/world-<seed>/ (warehouse, models, reports): simulate the world,
encoder features, PAAG (held-out AUROC, the oracle's, the gap closed), the nightly regroup, the instruction
rows, Table 1 (NDCG@5 by true CTR and ARI against the hidden segments, PAAG's groups against every fixed
grouping), the G-MLLM pre-trained with and without the group token, Figure 3 (the GRM against the
group-agnostic reward model, Pair Accuracy on the held-out products' true labels, one pair of models per
training seed) and Table 3 (the simulated A/B on the held-out products: pretrained, one-size, OSMF without
group, OSMF, the oracle and its references; Group-DPO once per training seed, ranked by the seed-0 reward
models). Each world's result is kept in <out_dir>/world-<seed>/result.json: a rerun skips a world that has
one (--retrain runs it again), so the worlds can be run in separate sittings.

The report (reports/evaluate.json) and the results page (docs/results.md) are generated from those results
by osmf_core.evaluation.results; no figure is typed by hand. Every training setting here (steps, rounds,
sizes) is the demo's, chosen on the development world; the evaluation worlds are only evaluated.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from osmf_core.data.config import ConfigError, SparkSettings
from osmf_core.data.reader import FeatureBank
from osmf_core.data.reports import write_report
from osmf_core.data.spark import build_spark
from osmf_core.evaluation import figure3, results, table3
from osmf_core.evaluation.calibrate import measure
from osmf_core.evaluation.groups import GroupsEvalConfig, evaluate_groups
from osmf_core.features import encode as features
from osmf_core.features import instructions as curation
from osmf_core.grouping import regroup
from osmf_core.models.paag import PAAGConfig, load_model
from osmf_core.training.dpo import DPOConfig
from osmf_core.training.gmllm import MODEL_SUBDIR, PretrainConfig, pretrain
from osmf_core.training.grm import GRMConfig
from osmf_core.training.paag import MODEL_FILE, TrainConfig, auroc, predict, train
from osmf_core.world.model import CATEGORY_NAMES, WorldSize
from osmf_core.world.params import DEV_SEED, WorldParams
from osmf_core.world.simulate import SimulateConfig, simulate_world
from osmf_core.world.truth import Truth

TABLE3_METHODS = ("pretrained", "teacher", "one_size", "osmf_no_group", "osmf", "oracle", "logged_best",
                  "oracle_one_size")
STAGES = ("simulate", "features", "train_paag", "eval_paag", "regroup", "instructions", "table1", "pretrain_gmllm",
          "pretrain_gmllm_no_group", "figure3", "table3")


@dataclass
class EvaluateConfig:
    # the worlds
    worlds: tuple[int, ...] = (101, 102, 103)  # evaluation world seeds (the development seed is refused)
    # the development world alone (seed 7), where settings are chosen: its report goes to
    # reports/evaluate_dev.json and no results page is written
    development: bool = False
    seeds: tuple[int, ...] = (0, 1)  # training seeds per world: the reward models and Group-DPO
    size: WorldSize = field(default_factory=WorldSize)  # every world's sizes (users, products, impressions ...)
    params: WorldParams = field(default_factory=WorldParams)  # every world's preset and knobs
    # training budget per world, chosen on the development world (docs/results.md says why): the G-MLLM
    # trains until it writes different prompts for different groups; each reward model runs its 4 epochs
    # pretrained: MobileNetV2 + MiniLM; tiny: small random encoders
    encoders: str = field(default="pretrained", metadata={"choices": ("pretrained", "tiny")})
    paag_steps: int = 400  # PAAG training steps
    gmllm_steps: int = 1500  # G-MLLM pre-training steps (with and without the group token)
    grm_steps: int = 600  # steps of each reward model (at most: its epochs end it first)
    dpo_rounds: int = 2  # Group-DPO rounds per method and seed
    dpo_contexts: int = 160  # training (product, group) contexts Group-DPO samples from per round (0: all)
    # output
    out_dir: str = "runs/evaluate"  # one folder per world: world-<seed>/ (warehouse, models, result.json)
    retrain: bool = False  # run a world again even where its result.json exists
    report: str = "reports/evaluate.json"  # every world's result and the orderings across them
    page: str = "docs/results.md"  # the results page generated from the report
    # per-stage overrides of the configs above, {stage: {field: value}} (code and tests only, no flag):
    # simulate, features, paag, regroup, curation, pretrain, grm, dpo
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        self.worlds, self.seeds = tuple(self.worlds), tuple(self.seeds)
        if DEV_SEED in self.worlds:
            raise ValueError(f"world {DEV_SEED} is the development world, where every setting was chosen: "
                             "evaluate on other seeds")
        if not self.worlds or not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--worlds and --seeds need at least one seed each, the seeds distinct")
        for name in ("paag_steps", "gmllm_steps", "grm_steps", "dpo_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class Progress:
    """One line per finished stage: the world, the stage, its seconds and the world's running total."""

    def __init__(self, seed: int, index: int, n_worlds: int, log=print):
        self.seed, self.where, self.log = seed, f"world {seed} ({index}/{n_worlds})", log
        self.t0, self.seconds = time.perf_counter(), {}

    def run(self, stage: str, fn):
        t = time.perf_counter()
        out = fn()
        self.seconds[stage] = round(time.perf_counter() - t, 1)
        self.log(f"[evaluate] {self.where} stage {len(self.seconds)}/{len(STAGES)} {stage}: "
                 f"{self.seconds[stage]:.0f}s (world so far {(time.perf_counter() - self.t0) / 60:.1f} min)", flush=True)
        return out


def _with(cfg, overrides: dict, stage: str):
    return replace(cfg, **overrides.get(stage, {}))


def run_world(cfg: EvaluateConfig, seed: int, settings: SparkSettings, progress: Progress) -> dict:
    """Every stage on one world; returns its result (also written to its folder's result.json)."""
    home = Path(cfg.out_dir).resolve() / f"world-{seed}"  # absolute: Delta tables are registered by path
    shutil.rmtree(home, ignore_errors=True)  # a world is evaluated from scratch, never resumed halfway
    wh, runs, ov = str(home / "warehouse"), home / "runs", cfg.overrides
    stage = progress.run
    sim = _with(SimulateConfig(seed=seed, size=cfg.size, params=cfg.params), ov, "simulate")
    spark = build_spark(replace(settings, warehouse=wh))
    stage("simulate", lambda: simulate_world(spark, sim, wh, log=lambda *_: None))
    truth = Truth.from_warehouse(wh)  # the world's truth, for the evaluation's own references
    image_enc, text_enc = ("mobilenet_v2", "minilm") if cfg.encoders == "pretrained" else ("tiny", "tiny")
    fcfg = _with(features.FeatureConfig(image_encoder=image_enc, text_encoder=text_enc), ov, "features")
    stage("features", lambda: features.build_features(spark, fcfg, wh, log=lambda *_: None))
    tcfg = _with(TrainConfig(warehouse=wh, text_encoder=text_enc, image_encoder=image_enc, model=PAAGConfig(),
                             max_steps=cfg.paag_steps, epochs=1, out_dir=str(runs / "paag"), progress=False,
                             save_every=cfg.paag_steps), ov, "paag")
    stage("train_paag", lambda: train(tcfg))
    paag_model = f"{tcfg.out_dir}/{MODEL_FILE}"

    def eval_paag() -> dict:
        model, _ = load_model(paag_model)
        scores, labels, rows = predict(model, FeatureBank.load(wh, text_enc, image_enc), wh, "test")
        oracle = truth.click_probability(rows, rows["creative_id"])
        a, o = auroc(scores, labels), auroc(oracle, labels)
        return {"test_auroc": round(a, 4), "oracle_auroc": round(o, 4), "gap_closed": round((a - 0.5) / (o - 0.5), 4)}
    paag = stage("eval_paag", eval_paag)
    rcfg = _with(regroup.RegroupConfig(model=paag_model), ov, "regroup")
    groups = stage("regroup", lambda: regroup.regroup(spark, rcfg, wh, log=lambda *_: None))
    ccfg = _with(curation.CurationConfig(), ov, "curation")
    instr = stage("instructions", lambda: curation.build_instructions(spark, ccfg, wh, log=lambda *_: None))
    gcfg = GroupsEvalConfig(model=paag_model, window_days=rcfg.window_days, min_exposure=rcfg.min_exposure,
                            report=str(home / "eval_groups.json"))
    t1 = stage("table1", lambda: evaluate_groups(spark, gcfg, wh))  # stops the Spark session
    if not instr["grm_examples"].get("train") or not instr["grm_examples"].get("test"):
        raise ConfigError(f"world {seed} has no GRM pairs in one split ({instr['grm_examples']}): too small a world")
    gm, gm_ng = runs / "gmllm", runs / "gmllm_no_group"
    pcfg = _with(PretrainConfig(warehouse=wh, max_steps=cfg.gmllm_steps, save_every=cfg.gmllm_steps, progress=False),
                 ov, "pretrain")
    stage("pretrain_gmllm", lambda: pretrain(replace(pcfg, out_dir=str(gm))))
    stage("pretrain_gmllm_no_group", lambda: pretrain(replace(pcfg, out_dir=str(gm_ng), use_group=False)))
    grm = _with(GRMConfig(warehouse=wh, gmllm=str(gm / MODEL_SUBDIR), max_steps=cfg.grm_steps,
                          save_every=cfg.grm_steps), ov, "grm")
    fcfg3 = figure3.checked(figure3.GRMEvalConfig(variants=("grm", "no_group"), seeds=len(cfg.seeds), reference=False,
                                                  out_dir=str(runs / "grm"), report=str(home / "eval_grm.json"),
                                                  train=grm))
    fig3, _, _ = stage("figure3", lambda: figure3.train_variants(fcfg3))
    dpo = _with(DPOConfig(warehouse=wh, gmllm=str(gm / MODEL_SUBDIR), grm=str(runs / "grm" / "grm" / "seed0" / MODEL_SUBDIR),
                          rounds=cfg.dpo_rounds, max_contexts=cfg.dpo_contexts, progress=False), ov, "dpo")
    ocfg = table3.checked(table3.OnlineEvalConfig(
        methods=TABLE3_METHODS, seeds=cfg.seeds, grm_no_group=str(runs / "grm" / "no_group" / "seed0" / MODEL_SUBDIR),
        gmllm_no_group=str(gm_ng / MODEL_SUBDIR), out_dir=str(runs / "eval_online"),
        report=str(home / "eval_online.json"), dpo=dpo))
    t3 = stage("table3", lambda: table3.run_table3(ocfg))
    result = {
        "seed": seed, "params": cfg.params.to_json(), "size": {"users": cfg.size.users, "products": cfg.size.products},
        "splits": {name: truth.spec.split_name(c) for c, name in enumerate(CATEGORY_NAMES)},
        "lever": measure(seed, cfg.params, cfg.size.products, min(cfg.size.products, 28), 2_000),
        "paag": paag,
        "regroup": {k: groups[k] for k in ("products_grouped", "groups", "mean_k_star", "mean_silhouette", "pairs")},
        "grm_pairs": instr["grm_examples"],
        "table1": {"ndcg5_true": t1["ndcg5_true"], "ari": t1["ari"], "groups_per_product": t1["groups_per_product"]},
        "figure3": {name: {"pair_accuracy_true": [round(r["true"]["pair_accuracy"], 4) for r in runs_],
                           "pair_accuracy": [round(r["observed"]["pair_accuracy"], 4) for r in runs_]}
                    for name, runs_ in fig3.items()},
        "table3": {"ctr": t3["ctr"], "ctr_by_seed": t3["ctr_by_seed"], "groups": t3["groups"],
                   "products": t3["products"], "distinct_prompts": t3["distinct_prompts"],
                   "reward_agreement": _agreement(t3)},
        "seeds": list(cfg.seeds), "seconds": progress.seconds,
        "budget": {k: getattr(cfg, k) for k in ("paag_steps", "gmllm_steps", "grm_steps", "dpo_rounds", "dpo_contexts")},
        "minutes": round((time.perf_counter() - progress.t0) / 60, 1),
    }
    (home / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def _agreement(table3_report: dict) -> dict:
    """Per trained method: how often its reward model's winner truly beats its loser on Group-DPO's own pairs."""
    return {m: round(r["agreement"], 4) for m, r in table3_report.get("reward_check", {}).items()}


def run_evaluate(cfg: EvaluateConfig, settings: SparkSettings, log=print) -> dict:
    """Every world (skipping those with a result unless cfg.retrain), then the report and the results page; with
    cfg.development, the development world alone and its report (settings are chosen on it, never on the others)."""
    done = {}
    worlds = (DEV_SEED,) if cfg.development else cfg.worlds
    for i, seed in enumerate(worlds, 1):
        path = Path(cfg.out_dir) / f"world-{seed}" / "result.json"
        if path.exists() and not cfg.retrain:
            done[seed] = json.loads(path.read_text())
            online = path.parent / "eval_online.json"
            if "reward_agreement" not in done[seed]["table3"] and online.exists():  # a result of an earlier build
                done[seed]["table3"]["reward_agreement"] = _agreement(json.loads(online.read_text()))
            log(f"[evaluate] world {seed} ({i}/{len(worlds)}): kept from {path} (--retrain runs it again)")
            continue
        done[seed] = run_world(cfg, seed, settings, Progress(seed, i, len(worlds), log))
    report = results.build_report(list(done.values()), development_seed=DEV_SEED)
    if cfg.development:
        write_report(str(Path(cfg.report).with_name(Path(cfg.report).stem + "_dev.json")), report)
    else:
        results.write(report, cfg.report, cfg.page)
    log(results.summary_lines(report))
    return report

