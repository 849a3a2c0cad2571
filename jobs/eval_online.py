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
and, asked for by name, the diagnostic osmf_true_reward: Group-DPO ranked by the simulator's true CTR
instead of the GRM, which tells the reward model's share of a shortfall from Group-DPO's own.
Scored by the simulator's true expected CTR over each group's users; writes reports/eval_online.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from osmf_core import catalog as C
from osmf_core.models.gmllm import GroupLlava
from osmf_core.config import ConfigError, config_error
from osmf_core.online import AUDIENCE_TABLES, audiences, oracle_prompts, score_prompts, summarize, table3
from osmf_core.reports import write_report
from osmf_core.store import run_of
from osmf_core.training.dpo import (ADAPTER_SUBDIR, CONTEXT_TABLES, DPOConfig, greedy_prompts, load_contexts, load_policy,
                                    run_group_dpo)
from osmf_core.truth import Truth

# name: (policy reads the group token, reward model, robust weighting); pretrained and oracle train nothing
METHODS = {"one_size": (False, "grm_no_group", False), "osmf_no_group": (False, "grm", False),
           "osmf": (True, "grm", False), "osmf_robust": (True, "grm", True), "osmf_true_reward": (True, "truth", False)}
ORDER = ("pretrained", "teacher", "one_size", "osmf_no_group", "osmf", "osmf_robust", "oracle")
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
    ap.add_argument("--methods", default=",".join(ORDER), help=f"subset of {','.join(ORDER + DIAGNOSTICS)}")
    ap.add_argument("--out-dir", default="runs/eval_online", help="one Group-DPO run per method under it")
    ap.add_argument("--retrain", action="store_true", help="train again even where a method's adapter exists")
    ap.add_argument("--report", default="reports/eval_online.json")
    ap.add_argument("--local_rank", type=int, default=0)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    paths = {"gmllm": args.gmllm, "grm": args.grm, "grm_no_group": args.grm_no_group}
    needed = {"gmllm"} | {METHODS[m][1] for m in methods if m in METHODS and METHODS[m][1] != "truth"}
    unknown = set(methods) - set(ORDER + DIAGNOSTICS)
    problems = [f"unknown methods {sorted(unknown)}"] if unknown else []
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
    prompts: dict[str, pd.DataFrame] = {}
    training: dict[str, list] = {}
    for m in methods:
        if m == "pretrained":
            prompts[m] = method_prompts(load_policy(args.gmllm), held_out, use_group=True)
        elif m == "teacher":
            prompts[m] = held_out[["product_id", "group_id"]].assign(prompt=held_out["response"])
        elif m == "oracle":
            prompts[m] = oracle_prompts(truth, members)
        else:
            use_group, grm, robust = METHODS[m]
            out = Path(args.out_dir) / m
            if args.retrain or not (out / ADAPTER_SUBDIR).is_dir():
                shutil.rmtree(out, ignore_errors=True)
                cfg = DPOConfig(warehouse=args.warehouse, run_date=run_date, gmllm=args.gmllm,
                                grm="" if grm == "truth" else paths[grm], reward="truth" if grm == "truth" else "grm",
                                use_group=use_group, robust=robust, rounds=args.rounds, samples=args.samples,
                                epochs=args.epochs, batch_size=args.batch_size, max_contexts=args.max_contexts,
                                beta=args.beta, lr=args.lr, robust_eta=args.robust_eta, seed=args.seed,
                                deepspeed_config=args.deepspeed_config, out_dir=str(out))
                training[m] = run_group_dpo(cfg)["rounds"]
            prompts[m] = method_prompts(load_policy(args.gmllm, str(out / ADAPTER_SUBDIR)), held_out, use_group)
        print(f"[eval_online] {m}: {prompts[m]['prompt'].nunique()} distinct prompts over {len(prompts[m])} groups",
              flush=True)
    scored = {m: score_prompts(truth, members, p) for m, p in prompts.items()}
    results = {m: summarize(s) for m, s in scored.items()}
    table = table3(results)
    report = {"ctr": {m: round(r["ctr"], 6) for m, r in results.items()},
              "worst_group_ctr": {m: round(r["worst_group_ctr"], 6) for m, r in results.items()},
              "lift": {m: round(float(v), 5) for m, v in table["lift"].items()},
              "products": results["pretrained"]["products"], "groups": results["pretrained"]["groups"],
              "run_date": str(run_date), "training": {m: [{k: v for k, v in r.items() if k != "per_group_after"}
                                                          for r in h] for m, h in training.items()},
              "examples": {m: s.head(6)[["product_id", "group_id", "prompt", "sim_ctr"]].to_dict("records")
                           for m, s in scored.items()}}
    if "oracle" in results and "osmf" in results:
        gap = results["oracle"]["ctr"] - results["pretrained"]["ctr"]
        report["osmf_share_of_oracle_lift"] = round((results["osmf"]["ctr"] - results["pretrained"]["ctr"]) / gap, 4)
    write_report(args.report, report)
    print(table.to_string(float_format=lambda v: f"{v:.5f}"))
    if "osmf_share_of_oracle_lift" in report:
        print(f"OSMF reaches {report['osmf_share_of_oracle_lift']:.1%} of the oracle's lift -> {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
