"""Table 1 analog: how distinct and how true the regroup's groups are, against baseline groupings.

Methods, all on the viewers of the products the regroup grouped for a run date:
  paag         gaip.user_groups: the regroup's groups (by default K-Means on the viewers' preference
               profiles over the product's creatives, K* by silhouette; see osmf_core.grouping.regroup)
  paag_eut     the same clustering on e_u|t itself, as the paper does (the regroup's --cluster-on eut)
  gender       one group per gender
  age          three age bands (codes 0-3, 4-7, 8-12 of the 13 age segments)
  gender_age   gender x age band
  random       the PAAG groups' sizes, users assigned at random (per product, seeded)
  user_only    the same clustering (K* by silhouette, small groups merged) on e_u, the user embedding
               without the product: no product awareness

NDCG@5 (lower = more distinct), per product and averaged over products:
  - the CTR of a creative in a group = clicks / impressions of the group's users in the log window;
    a group "has" a creative with at least `min_exposure` impressions of it
  - for every ordered pair of groups (reference R, prediction P) of a product with at least 2 shared
    creatives: rank the shared creatives by CTR in R and in P (descending; ties by creative id);
    relevance of a creative = 5 - its rank in R (0-based; 0 beyond the top 5);
    DCG@5(P) = sum over P's top 5 of (2^rel - 1) / log2(position + 2); NDCG@5 = DCG@5(P) / DCG@5(R)
  - a product's NDCG@5 is the mean over its ordered pairs; products without a pair are left out
  ndcg5_true does the same with the simulator's expected CTR (no click noise) in place of observed CTR.
ARI: adjusted Rand index of a product's groups against the simulator's hidden segments of its viewers,
averaged over products, and per category (ari_by_category; each category's segments follow the attribute(s)
the world drew for it, split_by_category).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from osmf_core.data import catalog as C
from osmf_core.data.ledger import published_in, read_published
from osmf_core.data.reader import require_tables
from osmf_core.data.reports import write_report
from osmf_core.data.store import exists_in, read_table
from osmf_core.grouping.kmeans import cluster_products
from osmf_core.grouping.group_features import merge_small
from osmf_core.grouping.regroup import RegroupConfig
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.world import model as world
from osmf_core.world.truth import Truth

METHODS = ("paag", "paag_eut", "gender", "age", "gender_age", "random", "user_only")
ATTRS = list(C.USER_ATTRIBUTES)


@dataclass
class GroupsEvalConfig:
    # the run
    model: str = RegroupConfig.model  # the PAAG model the regroup used
    run_date: str = ""  # regroup run to evaluate, YYYY-MM-DD (empty: the latest complete one)
    window_days: int = RegroupConfig.window_days  # days of impressions, ending on the run date, counted for CTR
    min_exposure: int = RegroupConfig.min_exposure  # a group "has" a creative with at least this many impressions
    seed: int = 0  # the random grouping's permutation and the clustering's seedings
    report: str = "reports/eval_groups.json"  # JSON report

    def __post_init__(self):
        if self.window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {self.window_days}")
        if self.min_exposure < 1:
            raise ValueError(f"min_exposure must be >= 1, got {self.min_exposure}")


def ndcg5(ref: np.ndarray, pred: np.ndarray, ids: np.ndarray) -> float:
    """NDCG@5 of the prediction's ranking against the reference's (CTR arrays over shared creatives)."""
    r_order = np.lexsort((ids, -ref))
    rel = np.zeros(len(ref))
    rel[r_order[:5]] = 5 - np.arange(min(5, len(ref)))
    disc = 1.0 / np.log2(np.arange(2, 7))
    gains = 2.0 ** rel - 1.0
    ideal = (gains[r_order[:5]] * disc[:min(5, len(ref))]).sum()
    got = (gains[np.lexsort((ids, -pred))[:5]] * disc[:min(5, len(ref))]).sum()
    return float(got / ideal)


def product_ndcg(table: pd.DataFrame, value: str) -> float | None:
    """Mean NDCG@5 over ordered group pairs of one product; table rows (group, creative, value)."""
    wide = table.pivot(index="creative_id", columns="group", values=value)
    scores = []
    for a in wide.columns:
        for b in wide.columns:
            if a == b:
                continue
            shared = wide[[a, b]].dropna()
            if len(shared) >= 2:
                scores.append(ndcg5(shared[a].to_numpy(), shared[b].to_numpy(), shared.index.to_numpy()))
    return float(np.mean(scores)) if scores else None


def _read(spark, warehouse: str, cfg: GroupsEvalConfig):
    """(run date, the run's user groups, the window's impressions per (product, user, creative), users)."""
    require_tables((C.USER_GROUPS, C.IMPRESSIONS, C.CREATIVES, C.USERS), warehouse, exists_in(spark, warehouse))
    run = published_in(spark, warehouse, cfg.run_date)  # the latest complete regroup run
    run_date = run.run_date
    ug = (read_published(spark, C.USER_GROUPS, warehouse, run).where(F.col("run_date") == F.lit(run_date))
          .select("product_id", "user_id", "group_id").toPandas())
    end = pd.Timestamp(run_date).date()
    start = end - pd.Timedelta(days=cfg.window_days - 1)
    imps = (read_table(spark, C.IMPRESSIONS, warehouse)
            .where(F.col("event_date").between(F.lit(start), F.lit(end)))
            .join(read_table(spark, C.CREATIVES, warehouse).select("creative_id", "product_id"), "creative_id")
            .groupBy("product_id", "user_id", "creative_id")
            .agg(F.count("*").alias("n"), F.sum("clicked").alias("k")).toPandas())
    users = read_table(spark, C.USERS, warehouse).select("user_id", *ATTRS).toPandas().set_index("user_id")
    return run_date, ug, imps, users


def groupings(ug: pd.DataFrame, users: pd.DataFrame, truth: Truth, cfg: GroupsEvalConfig,
              warehouse: str) -> pd.DataFrame:
    """One row per (product, user) with its hidden segment, category and a g_<method> column per method."""
    rows = ug.join(users, on="user_id")
    cat = truth.products.category[rows["product_id"].to_numpy()]
    rows["segment"] = world.segment_of(truth.spec, cat, {a: rows[a].to_numpy() for a in ATTRS})
    rows["category"] = np.asarray(world.CATEGORY_NAMES)[cat]
    band = np.digitize(rows["age"].to_numpy(), [4, 8])
    rows["g_paag"] = rows["group_id"]
    rows["g_gender"] = rows["gender"]
    rows["g_age"] = band
    rows["g_gender_age"] = rows["gender"] * 3 + band
    rng = np.random.default_rng(cfg.seed)
    rows = rows.sort_values(["product_id", "user_id"]).reset_index(drop=True)
    rows["g_random"] = rows.groupby("product_id")["group_id"].transform(lambda g: rng.permutation(g.to_numpy()))
    # paag_eut and user_only: e_u|t and e_u, clustered exactly as the regroup clusters
    embedder = PAAGEmbedder(cfg.model, warehouse)
    attrs = rows[ATTRS].to_numpy(np.int64)
    with torch.no_grad():
        eu = embedder.model.user_embedding(torch.from_numpy(attrs)).numpy()
    rg = RegroupConfig(model=cfg.model, seed=cfg.seed)
    bounds = np.flatnonzero(np.r_[True, np.diff(rows["product_id"].to_numpy()) != 0, True])
    for name, x in (("paag_eut", embedder(attrs, rows["product_id"].to_numpy())), ("user_only", eu)):
        parts = [x[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        labels = [merge_small(p, r.labels, rg.min_group_size)[0]
                  for p, r in zip(parts, cluster_products(parts, rg.cluster))]
        rows[f"g_{name}"] = np.concatenate(labels)
    return rows


def scores(rows: pd.DataFrame, imps: pd.DataFrame, users: pd.DataFrame, truth: Truth, min_exposure: int) -> dict:
    """{ndcg5, ndcg5_true, ari, groups_per_product, ari_by_category} of every method."""
    # expected CTR of every (user, creative) impression pair, for ndcg5_true
    imps = imps.merge(rows[["product_id", "user_id", "segment", *(f"g_{m}" for m in METHODS)]],
                      on=["product_id", "user_id"])
    imps = imps.join(users, on="user_id")
    imps["p"] = truth.click_probability(imps, imps["creative_id"].to_numpy()) * imps["n"]
    out: dict[str, dict] = {"ndcg5": {}, "ndcg5_true": {}, "ari": {}, "groups_per_product": {}, "ari_by_category": {}}
    for m in METHODS:
        col = f"g_{m}"
        agg = imps.groupby(["product_id", col, "creative_id"]).agg(n=("n", "sum"), k=("k", "sum"), p=("p", "sum"))
        agg = agg.reset_index().rename(columns={col: "group"})
        agg = agg[agg["n"] >= min_exposure]
        agg["ctr"], agg["true_ctr"] = agg["k"] / agg["n"], agg["p"] / agg["n"]
        obs, tru = [], []
        for _, t in agg.groupby("product_id"):
            obs.append(product_ndcg(t, "ctr"))
            tru.append(product_ndcg(t, "true_ctr"))
        out["ndcg5"][m] = float(np.mean([v for v in obs if v is not None]))
        out["ndcg5_true"][m] = float(np.mean([v for v in tru if v is not None]))
        ari = pd.DataFrame([(g["category"].iat[0], adjusted_rand_score(g["segment"], g[col]))
                            for _, g in rows.groupby("product_id")], columns=["category", "ari"])
        out["ari"][m] = float(ari["ari"].mean())
        out["ari_by_category"][m] = {c: float(v) for c, v in ari.groupby("category")["ari"].mean().items()}
        out["groups_per_product"][m] = float(rows.groupby("product_id")[col].nunique().mean())
    return out


def print_table(out: dict) -> None:
    print(f"\n{'grouping':<12} {'groups':>7} {'NDCG@5':>8} {'NDCG@5 true':>12} {'ARI':>7}")
    for m in METHODS:
        print(f"{m:<12} {out['groups_per_product'][m]:>7.2f} {out['ndcg5'][m]:>8.4f} {out['ndcg5_true'][m]:>12.4f} "
              f"{out['ari'][m]:>7.4f}")
    cats = sorted(out["ari_by_category"]["paag"])
    print(f"\nARI by category (the attribute that splits it):\n{'category':<16} " + " ".join(f"{m:>10}" for m in METHODS))
    for c in cats:
        print(f"{c:<16} " + " ".join(f"{out['ari_by_category'][m][c]:>10.4f}" for m in METHODS)
              + f"  ({out['split_by_category'][c]})")


def evaluate_groups(spark, cfg: GroupsEvalConfig, warehouse: str) -> dict:
    """Table 1 of a regroup run (the latest complete one unless cfg.run_date): prints it and writes cfg.report.
    ConfigError (before any work) when a table or the run is missing. Returns the report."""
    t0 = time.perf_counter()
    run_date, ug, imps, users = _read(spark, warehouse, cfg)
    spark.stop()  # the rest is pandas and torch on the driver
    truth = Truth.from_warehouse(warehouse)
    rows = groupings(ug, users, truth, cfg, warehouse)
    out = scores(rows, imps, users, truth, cfg.min_exposure)
    out["split_by_category"] = {name: truth.spec.split_name(c) for c, name in enumerate(world.CATEGORY_NAMES)}
    print(f"run {run_date}: {rows['product_id'].nunique()} products, {len(rows):,} (product, user) rows, "
          f"{time.perf_counter() - t0:.0f}s")
    print_table(out)
    report = {**out, "run_date": run_date, "min_exposure": cfg.min_exposure}
    write_report(cfg.report, report)
    return report
