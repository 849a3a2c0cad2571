"""The simulated online A/B test, a Table 3 analog (jobs/eval_online.py), on the held-out products (those of
the GRM's test split): every method gives one background prompt per (product, group), scored by the
simulator's true expected CTR over the group's users (osmf_core.evaluation.online); the job's docstring lists
the methods. Trained methods run Group-DPO once per seed, each under <out_dir>/<method>[-seed<k>].
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.data.audiences import AUDIENCE_TABLES, audiences
from osmf_core.data.config import ConfigError
from osmf_core.data.reader import run_of
from osmf_core.data.reports import write_report
from osmf_core.evaluation.online import oracle_prompts, pair_agreement, score_prompts, summarize, table3, truth_scorer
from osmf_core.features.contexts import CONTEXT_TABLES, load_contexts
from osmf_core.models.gmllm.model import GroupLlava
from osmf_core.models.gmllm.policy import ADAPTER_SUBDIR, greedy_prompts, load_policy
from osmf_core.training.dpo import DPOConfig, run_group_dpo
from osmf_core.world.truth import Truth

# name: (policy reads the group token, reward model, robust weighting, the G-MLLM it starts from); pretrained and
# oracle train nothing. osmf_no_group starts from a G-MLLM pre-trained without the group token (the paper's
# ablation: no group information anywhere in the policy), the others from the group-aware one
METHODS = {"one_size": (False, "grm_no_group", False, "gmllm"), "osmf_no_group": (False, "grm", False, "gmllm_no_group"),
           "osmf": (True, "grm", False, "gmllm"), "osmf_robust": (True, "grm", True, "gmllm"),
           "osmf_true_reward": (True, "truth", False, "gmllm")}
ORDER = ("pretrained", "teacher", "one_size", "osmf_no_group", "osmf", "osmf_robust", "oracle")
CEILINGS = ("pretrained_no_group", "logged_best", "oracle_one_size")  # references that train nothing: by default
DIAGNOSTICS = ("osmf_true_reward",)  # not a method: Group-DPO ranked by the simulator's truth (a perfect GRM)
PER_METHOD = ("reward", "use_group", "robust", "out_dir")  # DPOConfig fields each method sets: not flags
FIXED = {"oracle": {}, "logged_best": {"logged": True}, "oracle_one_size": {"per_group": False}}  # oracle_prompts' args


@dataclass
class OnlineEvalConfig:
    # methods
    # comma-separated subset of pretrained, teacher, one_size, osmf_no_group, osmf, osmf_robust, oracle,
    # pretrained_no_group, logged_best, oracle_one_size and the diagnostic osmf_true_reward (only by name)
    methods: tuple[str, ...] = ORDER + CEILINGS
    seeds: tuple[int, ...] = ()  # Group-DPO seeds, e.g. 0,1,2; none: --seed alone
    # models
    grm_no_group: str = "runs/grm_no_group/model"  # group-agnostic reward model (one_size)
    gmllm_no_group: str = "runs/gmllm_no_group/model"  # G-MLLM pre-trained without the group token (osmf_no_group)
    # output
    out_dir: str = "runs/eval_online"  # one Group-DPO run per method under it
    retrain: bool = False  # train again even where a method's adapter exists
    report: str = "reports/eval_online.json"  # the JSON report
    # Group-DPO's settings for every trained method (--gmllm, --grm, --rounds, --beta, --min-margin ...),
    # less PER_METHOD; --min-margin is in the GRMs' score units, osmf_true_reward's in CTR units
    dpo: DPOConfig = field(default_factory=DPOConfig)

    def __post_init__(self):
        self.methods, self.seeds = tuple(self.methods), tuple(self.seeds)
        problems = []
        unknown = set(self.methods) - set(ORDER + CEILINGS + DIAGNOSTICS)
        if unknown:
            problems.append(f"unknown methods {sorted(unknown)}")
        if len(set(self.seeds)) != len(self.seeds) or not all(isinstance(s, int) for s in self.seeds):
            problems.append(f"--seeds must be distinct integers, got {','.join(map(str, self.seeds))!r}")
        if "pretrained" not in self.methods:
            problems.append("the pretrained method is the baseline of the lift: keep it in --methods")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The Group-DPO seeds every trained method runs: --seeds, else --seed alone."""
        return self.seeds or (self.dpo.seed,)

    def model_paths(self) -> dict[str, str]:
        return {"gmllm": self.dpo.gmllm, "grm": self.dpo.grm, "grm_no_group": self.grm_no_group,
                "gmllm_no_group": self.gmllm_no_group}


def checked(cfg: OnlineEvalConfig) -> OnlineEvalConfig:
    """`cfg` with Group-DPO's run date resolved (feat.instructions' latest unless given), once the models its
    methods need are found; ConfigError (one line, before any work) otherwise."""
    paths = cfg.model_paths()
    needed = {"gmllm"} | {METHODS[m][k] for m in cfg.methods if m in METHODS for k in (1, 3)} - {"truth"}
    missing = [f"no {k} at {paths[k]}" for k in sorted(needed) if not Path(paths[k]).is_dir()]
    if missing:
        raise ConfigError(f"{'; '.join(missing)} (make pretrain-gmllm, make train-grm; make eval-online makes them all)")
    run_date = run_of(C.INSTRUCTIONS, cfg.dpo.warehouse, cfg.dpo.run_date, needs=CONTEXT_TABLES + AUDIENCE_TABLES)
    return replace(cfg, dpo=replace(cfg.dpo, run_date=run_date))


def method_prompts(policy: GroupLlava, ctx: pd.DataFrame, use_group: bool) -> pd.DataFrame:
    """One greedy prompt per (product, group); a policy without the group token sees the same input for
    every group of a product, so it answers once per product and every group gets that prompt."""
    src = ctx if use_group else ctx.drop_duplicates("product_id")
    out = src[["product_id", "group_id"]].assign(prompt=greedy_prompts(policy, src, use_group))
    if not use_group:
        out = ctx[["product_id", "group_id"]].merge(out.drop(columns="group_id"), on="product_id")
    return out


def train_method(cfg: OnlineEvalConfig, m: str, seed: int, training: dict) -> Path:
    """The Group-DPO run of trained method `m` with `seed` (trained unless its adapter exists, or always with
    retrain; its rounds go to `training`); returns its folder."""
    out = Path(cfg.out_dir) / (m if seed == 0 else f"{m}-seed{seed}")
    use_group, grm, robust, gmllm = METHODS[m]
    if cfg.retrain or not (out / ADAPTER_SUBDIR).is_dir():
        shutil.rmtree(out, ignore_errors=True)
        dpo = replace(cfg.dpo, gmllm=cfg.model_paths()[gmllm], grm="" if grm == "truth" else cfg.model_paths()[grm],
                      reward="truth" if grm == "truth" else "grm", use_group=use_group, robust=robust, seed=seed,
                      out_dir=str(out))
        scorer = truth_scorer(dpo.warehouse, dpo.run_date)
        training[f"{m}/seed{seed}"] = run_group_dpo(dpo, scorer=scorer)["rounds"]
    return out


def reward_check(cfg: OnlineEvalConfig, truth: Truth, base: GroupLlava, dpo_pairs: dict) -> dict:
    """The reward models judged by the simulator on the policy's own samples (training products), with where
    each policy started on those contexts (the pre-trained model's greedy prompt, per group)."""
    wh, run_date = cfg.dpo.warehouse, cfg.dpo.run_date
    pairs = {m: pd.concat(ps, ignore_index=True) for m, ps in dpo_pairs.items() if ps}
    train_members = audiences(wh, run_date, pd.concat(pairs.values())["product_id"].unique()) if pairs else None
    check = {m: pair_agreement(truth, train_members, p) for m, p in pairs.items()}
    train_ctx = load_contexts(wh, run_date, split="train")
    train_ctx = train_ctx.iloc[:cfg.dpo.max_contexts] if cfg.dpo.max_contexts else train_ctx
    models = {"gmllm": base}
    start = {}
    for use_group, gmllm in {(METHODS[m][0], METHODS[m][3]) for m in pairs}:  # each policy's greedy start
        if gmllm not in models:
            models[gmllm] = load_policy(cfg.model_paths()[gmllm])
        start[use_group, gmllm] = float(score_prompts(truth, train_members, method_prompts(
            models[gmllm], train_ctx, use_group))["sim_ctr"].mean())
    for m, r in check.items():
        r["start_ctr"] = start[METHODS[m][0], METHODS[m][3]]
        print(f"[eval_online] {m}: the reward's winner truly beats its loser in {r['agreement']:.1%} of "
              f"{r['pairs']:,} Group-DPO pairs, by {r['true_gain']:+.5f} true CTR on average; chosen "
              f"{r['chosen_ctr']:.5f}, rejected {r['rejected_ctr']:.5f}, the policy's greedy start "
              f"{r['start_ctr']:.5f}")
        if "by_margin" in r:
            print(f"[eval_online] {m}: by reward margin, closest calls first: "
                  + ", ".join(f"{b['agreement']:.1%}" for b in r["by_margin"]), flush=True)
    return check


def run_table3(cfg: OnlineEvalConfig) -> dict:
    """Every method's prompts on the held-out products, scored by the simulator; writes and returns the
    report (`cfg` as `checked` gives it: its run date resolved) and prints the table."""
    wh, run_date = cfg.dpo.warehouse, cfg.dpo.run_date
    seeds = cfg.run_seeds
    held_out = load_contexts(wh, run_date, split="test")
    truth = Truth.from_warehouse(wh)
    members = audiences(wh, run_date, held_out["product_id"].unique())
    base = load_policy(cfg.dpo.gmllm)  # the pre-trained G-MLLM, loaded once for every greedy baseline
    prompts: dict[str, list[pd.DataFrame]] = {}  # one frame per seed for trained methods, one in all otherwise
    training: dict[str, list] = {}
    dpo_pairs: dict[str, list[pd.DataFrame]] = {}  # every round's (chosen, rejected) pairs, per trained method
    for m in cfg.methods:
        if m in ("pretrained", "pretrained_no_group"):
            prompts[m] = [method_prompts(base, held_out, use_group=m == "pretrained")]
        elif m == "teacher":
            prompts[m] = [held_out[["product_id", "group_id"]].assign(prompt=held_out["response"])]
        elif m in FIXED:
            prompts[m] = [oracle_prompts(truth, members, **FIXED[m])]
        else:
            prompts[m] = []
            for seed in seeds:
                out = train_method(cfg, m, seed, training)
                dpo_pairs.setdefault(m, []).extend(pd.read_parquet(f) for f in sorted(out.glob("round*/pairs.parquet")))
                prompts[m].append(method_prompts(load_policy(cfg.model_paths()[METHODS[m][3]], str(out / ADAPTER_SUBDIR)),
                                                 held_out, METHODS[m][0]))
        print(f"[eval_online] {m}: " + ", ".join(f"{p['prompt'].nunique()}" for p in prompts[m])
              + f" distinct prompts over {len(prompts[m][0])} groups", flush=True)
    scored = {m: [score_prompts(truth, members, p) for p in ps] for m, ps in prompts.items()}
    per_seed = {m: [summarize(s) for s in ss] for m, ss in scored.items()}
    results = {m: {k: float(np.mean([r[k] for r in rs])) for k in ("ctr", "worst_group_ctr")}
               for m, rs in per_seed.items()}
    table = table3(results)
    table.insert(1, "ctr_std", [float(np.std([r["ctr"] for r in per_seed[m]])) for m in table.index])
    first = {m: rs[0] for m, rs in per_seed.items()}
    report = {"ctr": {m: round(r["ctr"], 6) for m, r in results.items()},
              "worst_group_ctr": {m: round(r["worst_group_ctr"], 6) for m, r in results.items()},
              "lift": {m: round(float(v), 5) for m, v in table["lift"].items()},
              "seeds": len(seeds),
              "ctr_std": {m: round(float(v), 6) for m, v in table["ctr_std"].items()},
              "ctr_by_seed": {m: [round(r["ctr"], 6) for r in rs] for m, rs in per_seed.items() if m in METHODS},
              "distinct_prompts": {m: [int(p["prompt"].nunique()) for p in ps] for m, ps in prompts.items()},
              "products": first["pretrained"]["products"], "groups": first["pretrained"]["groups"],
              "run_date": str(run_date), "training": {m: [{k: v for k, v in r.items() if k != "per_group_after"}
                                                          for r in h] for m, h in training.items()},
              "examples": {m: ss[0].head(6)[["product_id", "group_id", "prompt", "sim_ctr"]].to_dict("records")
                           for m, ss in scored.items()}}
    if dpo_pairs:
        report["reward_check"] = reward_check(cfg, truth, base, dpo_pairs)
    if {"osmf", "one_size"} <= set(per_seed):  # the paper's ordering, seed by seed (pretrained is greedy: one value)
        pretrained_ctr = results["pretrained"]["ctr"]
        report["ordering_by_seed"] = [bool(o["ctr"] > s["ctr"] > pretrained_ctr)
                                      for o, s in zip(per_seed["osmf"], per_seed["one_size"])]
    if "oracle" in results and "osmf" in results:
        gap = results["oracle"]["ctr"] - results["pretrained"]["ctr"]
        report["osmf_share_of_oracle_lift"] = round((results["osmf"]["ctr"] - results["pretrained"]["ctr"]) / gap, 4)
    write_report(cfg.report, report)
    print(table.to_string(float_format=lambda v: f"{v:.5f}"))
    if "ordering_by_seed" in report:
        print(f"osmf > one_size > pretrained in {sum(report['ordering_by_seed'])} of {len(seeds)} seeds")
    if "osmf_share_of_oracle_lift" in report:
        print(f"OSMF reaches {report['osmf_share_of_oracle_lift']:.1%} of the oracle's lift -> {cfg.report}")
    return report
