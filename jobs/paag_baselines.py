"""What the PAAG data allows: reference AUROCs on the same held-out split as `make paag-ablation`.

  oracle                     the simulator's true click probabilities (needs the hidden truth)
  creative_ctr               smoothed click rate of each creative on the training days
  creative_ctr_x_propensity  times a smoothed rate per (user activity, impulse buying)
  creative_x_segment_ctr     click rate per (creative, true segment) times the propensity: the best a
                             model can do at this data volume if it found the segments (needs the truth)
  logreg_fullbatch           L2 logistic regression, fitted on all training rows at once, on the same
                             frozen image features PAAG reads (standardised, mean over patches)
  linear_minibatch           the same linear model trained like PAAG: Adam, batches of 512, 5 epochs

Writes reports/paag_baselines.json.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from osmf_core import world
from osmf_core.config import ConfigError, config_error, default_warehouse
from osmf_core.reports import write_report
from osmf_core.store import require_tables
from osmf_core.training.data import EXAMPLE_FIELDS, FeatureBank, example_batches
from osmf_core.training.paag import FEATURE_TABLES, TrainConfig, auroc
from osmf_core.truth import Truth


def _frame(warehouse: str, split: str) -> pd.DataFrame:
    parts = list(example_batches(warehouse, split, 100_000, seed=None))
    return pd.DataFrame({f: np.concatenate([p[f] for p in parts]) for f in EXAMPLE_FIELDS})


def _rate(train: pd.DataFrame, test: pd.DataFrame, keys: list[str], prior: float) -> np.ndarray:
    """Click rate per key on the training rows, shrunk towards the overall rate, looked up for test rows."""
    base = train["clicked"].mean()
    g = train.groupby(keys)["clicked"].agg(["sum", "count"])
    rate = ((g["sum"] + prior * base) / (g["count"] + prior)).rename("rate")
    return test.join(rate, on=keys)["rate"].fillna(base).to_numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", default=default_warehouse())
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the minibatch linear model")
    ap.add_argument("--report", default="reports/paag_baselines.json")
    args = ap.parse_args(argv)
    try:
        require_tables(FEATURE_TABLES, args.warehouse)
    except ConfigError as e:
        return config_error("paag_baselines", e)
    train, test = _frame(args.warehouse, "train"), _frame(args.warehouse, "test")
    truth = Truth.from_warehouse(args.warehouse)
    for frame in (train, test):
        frame["segment"] = world.segment_of(truth.products.category[frame["product_id"].to_numpy()], frame)
    y = test["clicked"].to_numpy()
    propensity = _rate(train, test, ["user_active", "is_impulse_purchase_user"], prior=10)
    creative = _rate(train, test, ["creative_id"], prior=50)
    out = {
        "oracle": auroc(truth.click_probability(test, test["creative_id"].to_numpy()), y),
        "creative_ctr": auroc(creative, y),
        "creative_ctr_x_propensity": auroc(creative * propensity, y),
        "creative_x_segment_ctr": auroc(_rate(train, test, ["creative_id", "segment"], prior=20) * propensity, y),
    }
    bank = FeatureBank.load(args.warehouse, TrainConfig.text_encoder, TrainConfig.image_encoder)
    x = bank.patches.mean(1)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)
    row_tr = np.searchsorted(bank.creative_ids, train["creative_id"].to_numpy())
    row_te = np.searchsorted(bank.creative_ids, test["creative_id"].to_numpy())
    # full batch: one weighted row per (creative, label), the same likelihood as one row per impression
    g = pd.DataFrame({"row": row_tr, "clicked": train["clicked"].to_numpy()}).groupby("row")["clicked"].agg(["sum", "count"])
    rows = g.index.to_numpy()
    fit = LogisticRegression(C=0.1, max_iter=2000).fit(
        np.concatenate([x[rows], x[rows]]), np.r_[np.ones(len(rows)), np.zeros(len(rows))],
        sample_weight=np.r_[g["sum"].to_numpy(), (g["count"] - g["sum"]).to_numpy()])
    out["logreg_fullbatch"] = auroc(fit.decision_function(x[row_te]), y)
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], 1)
    with torch.no_grad():  # starts at the base rate, as PAAG's image head does
        linear.bias.fill_(float(torch.logit(torch.tensor(train["clicked"].mean()))))
    opt = torch.optim.AdamW(linear.parameters(), lr=1e-3, weight_decay=0.01)
    xt = torch.from_numpy(x)
    curve = []
    for epoch in range(args.epochs):
        for batch in example_batches(args.warehouse, "train", 512, seed=epoch):
            logits = linear(xt[np.searchsorted(bank.creative_ids, batch["creative_id"])])[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.from_numpy(batch["clicked"].astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            curve.append(auroc(linear(xt[row_te])[:, 0].numpy(), y))
    out["linear_minibatch"] = curve[-1]
    out["linear_minibatch_by_epoch"] = curve
    for name, value in out.items():
        shown = ", ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else f"{value:.4f}"
        print(f"{name:<28} {shown}")
    write_report(args.report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
