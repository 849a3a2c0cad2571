"""The simulated online A/B test (Table 3 analog) and the group descriptions of the gallery, as pure pandas.

Every (product, group) of the held-out products is an arm's audience: the group's users from
gaip.user_groups. A method gives each audience one background prompt (a one-size method gives every group
of a product the same one); the simulator's true expected CTR of that prompt over the audience's users is
the arm's CTR. Overall CTR weighs groups by their size (each user sees the product once); the worst-group
CTR is, per product, its worst group's CTR, averaged over products.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from osmf_core import catalog as C
from osmf_core.instructions import TABLE5_ATTRIBUTES, most_common_profile
from osmf_core.runs import published
from osmf_core.training.data import read_frame
from osmf_core.truth import Truth
from osmf_core.world import ATTRS, style_prompt

AUDIENCE_TABLES = (C.USERS, C.USER_GROUPS)  # read by audiences


def audiences(warehouse: str, run_date: str, products) -> pd.DataFrame:
    """(product_id, group_id, user_id, attributes...) of the given products' groups in a regroup run."""
    products = set(int(p) for p in products)
    run = published(warehouse, run_date)  # the groups as the complete regroup run of that date left them
    ug = read_frame(C.USER_GROUPS, warehouse, ["product_id", "user_id", "group_id"], {"run_date": run_date},
                    version=run.version(C.USER_GROUPS))
    ug = ug[ug["product_id"].isin(products)]
    users = read_frame(C.USERS, warehouse, ["user_id", *ATTRS])
    return ug.merge(users, on="user_id")


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


def group_descriptions(members: pd.DataFrame, max_attrs: int = 4) -> dict[tuple[int, int], str]:
    """A short description per (product, group): its size and the most common values of the attributes on
    which the product's groups differ most (an attribute whose mode is the same in every group says nothing)."""
    out = {}
    for pid, users in members.groupby("product_id"):
        modes = {g: most_common_profile(who) for g, who in users.groupby("group_id")}
        shares = {g: {a: float((who[a] == modes[g][a]).mean()) for a in TABLE5_ATTRIBUTES}
                  for g, who in users.groupby("group_id")}
        differing = [a for a in TABLE5_ATTRIBUTES if len({m[a] for m in modes.values()}) > 1]
        differing.sort(key=lambda a: -np.mean([shares[g][a] for g in modes]))
        for g, m in modes.items():
            n = int((users["group_id"] == g).sum())
            attrs = ", ".join(f"{a} {m[a]}" for a in differing[:max_attrs]) or "no attribute sets it apart"
            out[(int(pid), int(g))] = f"{n:,} users; most common: {attrs}"
    return out
