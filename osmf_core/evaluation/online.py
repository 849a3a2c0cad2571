"""The simulated online A/B test (Table 3 analog) as pure pandas: the true CTR of prompts in their groups.

Every (product, group) of the held-out products is an arm's audience: the group's users from
gaip.user_groups. A method gives each audience one background prompt (a one-size method gives every group
of a product the same one); the simulator's true expected CTR of that prompt over the audience's users is
the arm's CTR. Overall CTR weighs groups by their size (each user sees the product once); the worst-group
CTR is, per product, its worst group's CTR, averaged over products.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.data.audiences import audiences
from osmf_core.world.truth import MANIFEST, Truth
from osmf_core.world.styles import style_prompt


def score_prompts(truth: Truth, members: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """`prompts` (product_id, group_id, prompt) -> plus size and sim_ctr, the true expected CTR in the group."""
    by_group = {k: g for k, g in members.groupby(["product_id", "group_id"])}
    out = prompts.copy()
    out["size"] = [len(by_group.get((p, g), ())) for p, g in zip(out["product_id"], out["group_id"])]
    out["sim_ctr"] = [truth.expected_ctr(str(t), int(p), by_group[(p, g)]) if (p, g) in by_group else np.nan
                      for p, g, t in zip(out["product_id"], out["group_id"], out["prompt"])]
    return out


def pair_agreement(truth: Truth, members: pd.DataFrame, pairs: pd.DataFrame, bins: int = 5) -> dict:
    """How right a reward model was on the policy's own samples: of Group-DPO's (chosen, rejected) prompt
    pairs (product_id, group_id, chosen, rejected), the share whose chosen prompt has the higher true expected
    CTR in the group, the mean true CTR gain of chosen over rejected, and the mean true CTR of each side
    (DPO pulls the policy toward the chosen side). With a grm_margin column (the reward's score gap),
    `by_margin` gives the same per quantile bin of that gap, from the closest calls to the surest."""
    scored = [score_prompts(truth, members, pairs.rename(columns={c: "prompt"})[["product_id", "group_id", "prompt"]])
              ["sim_ctr"].to_numpy() for c in ("chosen", "rejected")]
    gain = scored[0] - scored[1]
    mean = (lambda v: float(v.mean()) if len(v) else float("nan"))  # noqa: E731
    out = {"pairs": int(len(pairs)), "agreement": mean(gain > 0), "true_gain": mean(gain),
           "chosen_ctr": mean(scored[0]), "rejected_ctr": mean(scored[1])}
    if "grm_margin" in pairs and len(pairs) >= bins:  # is the reward right more often where it is surer?
        q = pd.qcut(pairs["grm_margin"].rank(method="first"), bins, labels=False).to_numpy()
        margin = pairs["grm_margin"].to_numpy()
        out["by_margin"] = [{"margin_median": float(np.median(margin[q == b])), "pairs": int((q == b).sum()),
                             "agreement": mean(gain[q == b] > 0), "true_gain": mean(gain[q == b])}
                            for b in range(bins)]
    return out


def oracle_prompts(truth: Truth, members: pd.DataFrame, per_group: bool = True, logged: bool = False) -> pd.DataFrame:
    """The ceiling: per group, the prompt of the style with the highest true expected CTR over its users.
    per_group=False: one style per product, the best over all its groups' users, shown to every group (what
    the best one-size-fits-all image could reach). logged=True: chosen among the product's logged creatives'
    styles only (what re-ranking the backgrounds in the log could reach)."""
    rows = []
    for p, users in members.groupby("product_id"):
        cands = truth.logged_styles(int(p)) if logged else None
        if per_group:
            rows += [(p, g, style_prompt(truth.oracle_style(int(p), who, cands)[0]))
                     for g, who in users.groupby("group_id")]
        else:
            best = style_prompt(truth.oracle_style(int(p), users, cands)[0])
            rows += [(p, g, best) for g in sorted(users["group_id"].unique())]
    return pd.DataFrame(rows, columns=["product_id", "group_id", "prompt"])


def summarize(scored: pd.DataFrame) -> dict:
    """Overall CTR (size-weighted over groups) and worst-group CTR (mean over products of the minimum)."""
    ok = scored.dropna(subset=["sim_ctr"])
    overall = float((ok["sim_ctr"] * ok["size"]).sum() / ok["size"].sum())
    worst = float(ok.groupby("product_id")["sim_ctr"].min().mean())
    return {"ctr": overall, "worst_group_ctr": worst, "groups": int(len(ok)), "products": int(ok["product_id"].nunique())}


def table3(results: dict[str, dict], baseline: str = "pretrained") -> pd.DataFrame:
    """Rows = methods: overall CTR, relative lift over the baseline, worst-group CTR."""
    base = results[baseline]["ctr"]
    return pd.DataFrame([{"method": m, "ctr": r["ctr"], "lift": (r["ctr"] - base) / base,
                          "worst_group_ctr": r["worst_group_ctr"]} for m, r in results.items()]).set_index("method")


def truth_scorer(warehouse: str, run_date: str):
    """For Group-DPO's reward 'truth': contexts -> scores by the simulator's true expected CTR among the group's
    users, what a perfect reward model would say (a diagnostic that separates the reward model's errors from
    what DPO can learn)."""
    return lambda ctx: _truth_scores(warehouse, run_date, ctx)


def _truth_scores(warehouse: str, run_date: str, ctx: pd.DataFrame):
    truth = Truth.from_warehouse(warehouse)
    groups = {k: g for k, g in audiences(warehouse, run_date, ctx["product_id"].unique()).groupby(["product_id", "group_id"])}
    return lambda row, prompts, pngs: np.array(
        [truth.expected_ctr(p, int(row["product_id"]), groups[(row["product_id"], row["group_id"])]) for p in prompts])


def simulated_ctr(warehouse: str):
    """On a simulated world (its truth manifest in the warehouse), (members, prompts) -> the true expected CTR
    of each prompt in its group, for the generation gallery; None on real logs."""
    if not (Path(warehouse) / MANIFEST).is_file():
        return None
    truth = Truth.from_warehouse(warehouse)
    return lambda members, prompts: score_prompts(truth, members, prompts)["sim_ctr"].to_numpy()
