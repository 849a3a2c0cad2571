"""The simulated online A/B test, a Table 3 analog, on the held-out products (those of the GRM's test split).

    python jobs/eval_online.py            # after make pretrain-gmllm and make train-grm (both reward models)
Methods, each giving one background prompt per (product, group) of a held-out product:
  pretrained     the pre-trained G-MLLM, greedy, with the group token
  teacher        what the G-MLLM was pre-trained to say: the style of the logged creative with the best
                 smoothed CTR in the group (the prompt-generation responses of feat.instructions)
  one_size       CTR-DPO, CAIG-like: no group token in the policy, ranked by the group-agnostic reward model;
                 one prompt per product, shown to every group
  osmf_no_group  Group-DPO ranked per group by the GRM, but the policy reads no group token (one per product)
  osmf           Group-DPO: policy and reference conditioned on G_{s,k}
  osmf_robust    osmf with worst-group (exponentiated-gradient) weighting of the DPO loss
  oracle         the best style per group by the simulator's truth: the ceiling
references that train nothing:
  pretrained_no_group  the pre-trained G-MLLM without the group token, one prompt per product: where the
                   group-agnostic methods start
and two ceilings by the simulator's truth, which split the oracle's lift into its parts:
  logged_best      per group, the best of the product's logged backgrounds (what re-ranking the log reaches)
  oracle_one_size  one style per product, the best over all its groups' users (no personalisation)
and, asked for by name, the diagnostic osmf_true_reward: Group-DPO ranked by the simulator's true CTR
instead of the GRM, which tells the reward model's share of a shortfall from Group-DPO's own.
Scored by the simulator's true expected CTR over each group's users; writes reports/eval_online.json.
With --seeds 0,1,2 every trained method is trained once per seed (Group-DPO's sampling and LoRA init):
the report gives the mean over seeds, its standard deviation and each seed's CTR.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.models.gmllm.model import GroupLlava
from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.audiences import AUDIENCE_TABLES, audiences
from osmf_core.evaluation.online import (oracle_prompts, pair_agreement, score_prompts, summarize, table3,
                                         truth_scorer)
from osmf_core.data.reports import write_report
from osmf_core.data.reader import run_of
from osmf_core.training.dpo import DPOConfig, run_group_dpo
from osmf_core.models.gmllm.policy import ADAPTER_SUBDIR, greedy_prompts, load_policy
from osmf_core.features.contexts import CONTEXT_TABLES, load_contexts
from osmf_core.world.truth import Truth

# name: (policy reads the group token, reward model, robust weighting); pretrained and oracle train nothing
METHODS = {"one_size": (False, "grm_no_group", False), "osmf_no_group": (False, "grm", False),
           "osmf": (True, "grm", False), "osmf_robust": (True, "grm", True), "osmf_true_reward": (True, "truth", False)}
ORDER = ("pretrained", "teacher", "one_size", "osmf_no_group", "osmf", "osmf_robust", "oracle")
CEILINGS = ("pretrained_no_group", "logged_best", "oracle_one_size")  # references that train nothing: by default
DIAGNOSTICS = ("osmf_true_reward",)  # not a method: Group-DPO ranked by the simulator's truth (a perfect GRM)


def method_prompts(policy: GroupLlava, ctx: pd.DataFrame, use_group: bool) -> pd.DataFrame:
    """One greedy prompt per (product, group); a policy without the group token sees the same input for
    every group of a product, so it answers once per product and every group gets that prompt."""
    src = ctx if use_group else ctx.drop_duplicates("product_id")
    out = src[["product_id", "group_id"]].assign(prompt=greedy_prompts(policy, src, use_group))
    if not use_group:
        out = ctx[["product_id", "group_id"]].merge(out.drop(columns="group_id"), on="product_id")
    return out


def main(argv=None) -> int:
    d = DPOConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", default=d.warehouse)
    ap.add_argument("--run-date", default=d.run_date)
    ap.add_argument("--gmllm", default=d.gmllm)
    ap.add_argument("--grm", default=d.grm, help="group-aware reward model (make train-grm)")
    ap.add_argument("--grm-no-group", default="runs/grm_no_group/model", help="group-agnostic reward model")
    ap.add_argument("--deepspeed_config", default=d.deepspeed_config)
    for name in ("rounds", "samples", "epochs", "batch_size", "max_contexts", "seed"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("beta", "lr", "robust_eta"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    ap.add_argument("--min-margin", type=float, default=d.min_margin,
                    help="reward gap a Group-DPO pair needs (the GRMs' scores; osmf_true_reward's are in CTR units)")
    ap.add_argument("--methods", default=",".join(ORDER + CEILINGS),
                    help=f"subset of {','.join(ORDER + CEILINGS + DIAGNOSTICS)}")
    ap.add_argument("--seeds", default="", help="comma-separated Group-DPO seeds, e.g. 0,1,2 (default: --seed)")
    ap.add_argument("--out-dir", default="runs/eval_online", help="one Group-DPO run per method under it")
    ap.add_argument("--retrain", action="store_true", help="train again even where a method's adapter exists")
    ap.add_argument("--report", default="reports/eval_online.json")
    ap.add_argument("--local_rank", type=int, default=0)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    paths = {"gmllm": args.gmllm, "grm": args.grm, "grm_no_group": args.grm_no_group}
    needed = {"gmllm"} | {METHODS[m][1] for m in methods if m in METHODS and METHODS[m][1] != "truth"}
    unknown = set(methods) - set(ORDER + CEILINGS + DIAGNOSTICS)
    problems = [f"unknown methods {sorted(unknown)}"] if unknown else []
    try:
        seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        problems.append(f"--seeds must be distinct integers, got {args.seeds!r}")
    problems += [f"no {k} at {paths[k]}" for k in sorted(needed) if not Path(paths[k]).is_dir()]
    if "pretrained" not in methods:
        problems.append("the pretrained method is the baseline of the lift: keep it in --methods")
    try:
        if problems:
            raise ConfigError(f"{'; '.join(problems)} (make pretrain-gmllm, make train-grm)")
        run_date = run_of(C.INSTRUCTIONS, args.warehouse, args.run_date, needs=CONTEXT_TABLES + AUDIENCE_TABLES)
    except ConfigError as e:
        return config_error("eval_online", e)
    held_out = load_contexts(args.warehouse, run_date, split="test")
    truth = Truth.from_warehouse(args.warehouse)
    members = audiences(args.warehouse, run_date, held_out["product_id"].unique())
    base = load_policy(args.gmllm)  # the pre-trained G-MLLM, loaded once for every greedy baseline
    fixed = {"oracle": dict(), "logged_best": dict(logged=True), "oracle_one_size": dict(per_group=False)}
    prompts: dict[str, list[pd.DataFrame]] = {}  # one frame per seed for trained methods, one in all otherwise
    training: dict[str, list] = {}
    dpo_pairs: dict[str, list[pd.DataFrame]] = {}  # every round's (chosen, rejected) pairs, per trained method
    for m in methods:
        if m in ("pretrained", "pretrained_no_group"):
            prompts[m] = [method_prompts(base, held_out, use_group=m == "pretrained")]
        elif m == "teacher":
            prompts[m] = [held_out[["product_id", "group_id"]].assign(prompt=held_out["response"])]
        elif m in fixed:
            prompts[m] = [oracle_prompts(truth, members, **fixed[m])]
        else:
            prompts[m] = []
            for seed in seeds:
                out = Path(args.out_dir) / (m if seed == 0 else f"{m}-seed{seed}")
                use_group, grm, robust = METHODS[m]
                if args.retrain or not (out / ADAPTER_SUBDIR).is_dir():
                    shutil.rmtree(out, ignore_errors=True)
                    cfg = DPOConfig(warehouse=args.warehouse, run_date=run_date, gmllm=args.gmllm,
                                    grm="" if grm == "truth" else paths[grm], reward="truth" if grm == "truth" else "grm",
                                    use_group=use_group, robust=robust, rounds=args.rounds, samples=args.samples,
                                    epochs=args.epochs, batch_size=args.batch_size, max_contexts=args.max_contexts,
                                    beta=args.beta, lr=args.lr, robust_eta=args.robust_eta, min_margin=args.min_margin,
                                    seed=seed,
                                    deepspeed_config=args.deepspeed_config, out_dir=str(out))
                    training[f"{m}/seed{seed}"] = run_group_dpo(cfg, scorer=truth_scorer(args.warehouse, run_date))["rounds"]
                dpo_pairs.setdefault(m, []).extend(pd.read_parquet(f) for f in sorted(out.glob("round*/pairs.parquet")))
                prompts[m].append(method_prompts(load_policy(args.gmllm, str(out / ADAPTER_SUBDIR)), held_out,
                                                 use_group))
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
              "products": first["pretrained"]["products"], "groups": first["pretrained"]["groups"],
              "run_date": str(run_date), "training": {m: [{k: v for k, v in r.items() if k != "per_group_after"}
                                                          for r in h] for m, h in training.items()},
              "examples": {m: ss[0].head(6)[["product_id", "group_id", "prompt", "sim_ctr"]].to_dict("records")
                           for m, ss in scored.items()}}
    if dpo_pairs:  # the reward models judged by the simulator on the policy's own samples (training products)
        pairs = {m: pd.concat(ps, ignore_index=True) for m, ps in dpo_pairs.items() if ps}
        train_members = audiences(args.warehouse, run_date,
                                  pd.concat(pairs.values())["product_id"].unique()) if pairs else None
        report["reward_check"] = {m: pair_agreement(truth, train_members, p) for m, p in pairs.items()}
        # where each policy started on those contexts: the pre-trained model's greedy prompt, per group
        train_ctx = load_contexts(args.warehouse, run_date, split="train")
        train_ctx = train_ctx.iloc[:args.max_contexts] if args.max_contexts else train_ctx
        start = {g: float(score_prompts(truth, train_members, method_prompts(base, train_ctx, g))
                          ["sim_ctr"].mean()) for g in {METHODS[m][0] for m in pairs}}
        for m, r in report["reward_check"].items():
            r["start_ctr"] = start[METHODS[m][0]]
            print(f"[eval_online] {m}: the reward's winner truly beats its loser in {r['agreement']:.1%} of "
                  f"{r['pairs']:,} Group-DPO pairs, by {r['true_gain']:+.5f} true CTR on average; chosen "
                  f"{r['chosen_ctr']:.5f}, rejected {r['rejected_ctr']:.5f}, the policy's greedy start "
                  f"{r['start_ctr']:.5f}")
            if "by_margin" in r:
                print(f"[eval_online] {m}: by reward margin, closest calls first: "
                      + ", ".join(f"{b['agreement']:.1%}" for b in r["by_margin"]), flush=True)
    if {"osmf", "one_size"} <= set(per_seed):  # the paper's ordering, seed by seed (pretrained is greedy: one value)
        pretrained_ctr = results["pretrained"]["ctr"]
        report["ordering_by_seed"] = [bool(o["ctr"] > s["ctr"] > pretrained_ctr)
                                      for o, s in zip(per_seed["osmf"], per_seed["one_size"])]
    if "oracle" in results and "osmf" in results:
        gap = results["oracle"]["ctr"] - results["pretrained"]["ctr"]
        report["osmf_share_of_oracle_lift"] = round((results["osmf"]["ctr"] - results["pretrained"]["ctr"]) / gap, 4)
    write_report(args.report, report)
    print(table.to_string(float_format=lambda v: f"{v:.5f}"))
    if "ordering_by_seed" in report:
        print(f"osmf > one_size > pretrained in {sum(report['ordering_by_seed'])} of {len(seeds)} seeds")
    if "osmf_share_of_oracle_lift" in report:
        print(f"OSMF reaches {report['osmf_share_of_oracle_lift']:.1%} of the oracle's lift -> {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
