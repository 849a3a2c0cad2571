"""What the PAAG data allows: reference AUROCs on the same held-out split as the ablation ladder.

  oracle                     the simulator's true click probabilities (needs the hidden truth)
  creative_ctr               smoothed click rate of each creative on the training days
  creative_ctr_x_propensity  times a smoothed rate per (user activity, impulse buying)
  creative_x_segment_ctr     click rate per (creative, true segment) times the propensity: the best a
                             model can do at this data volume if it found the segments (needs the truth)
  logreg_fullbatch           L2 logistic regression, fitted on all training rows at once, on the same
                             frozen image features PAAG reads (standardised, mean over patches)
  linear_minibatch           the same linear model trained like PAAG: Adam, batches of 512, `epochs` epochs
  crosses_segment            L2 logistic regression on one-hot creative, propensity and (category, TRUE segment,
                             TRUE style value) crosses: the right structure given (needs the truth)
  crosses_attributes         the same with (category, attribute, code, TRUE style value) crosses for all 20
                             attributes: what a model that must find the segments' attribute could reach if it
                             saw every creative's style perfectly (needs the truth); by share of training users
                             (`crosses_attributes_by_users`), to show what more data buys
  rung_reference             the true click logit restricted to the terms each rung can represent
                             (`Truth.rung_logits`), and "UT by category": the user × product term kept at
                             the level of the category, without telling a category's products apart
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from osmf_core.data.config import default_warehouse
from osmf_core.data.reader import ATTRS, EXAMPLE_FIELDS, FeatureBank, example_batches, require_tables
from osmf_core.data.reports import write_report
from osmf_core.training.paag import FEATURE_TABLES, TrainConfig, auroc
from osmf_core.world import model as world
from osmf_core.world.truth import Truth


@dataclass
class BaselinesConfig:
    # data
    # Delta warehouse with feat.* tables; default $OSMF_WAREHOUSE, else ./warehouse
    warehouse: str = field(default_factory=default_warehouse)
    # the baselines
    epochs: int = 5  # epochs of the minibatch linear model
    report: str = "reports/paag_baselines.json"  # JSON report

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def _frame(warehouse: str, split: str) -> pd.DataFrame:
    parts = list(example_batches(warehouse, split, 100_000, seed=None))
    return pd.DataFrame({f: np.concatenate([p[f] for p in parts]) for f in EXAMPLE_FIELDS})


def _rate(train: pd.DataFrame, test: pd.DataFrame, keys: list[str], prior: float) -> np.ndarray:
    """Click rate per key on the training rows, shrunk towards the overall rate, looked up for test rows."""
    base = train["clicked"].mean()
    g = train.groupby(keys)["clicked"].agg(["sum", "count"])
    rate = ((g["sum"] + prior * base) / (g["count"] + prior)).rename("rate")
    return test.join(rate, on=keys)["rate"].fillna(base).to_numpy()


def _one_hot(keys_train: list[np.ndarray], keys_test: list[np.ndarray]):
    """Sparse one-hot design matrices (train, test), one block per pair of key arrays, vocabulary shared."""
    train_blocks, test_blocks = [], []
    for a, b in zip(keys_train, keys_test):
        _, code = np.unique(np.r_[a, b], return_inverse=True)
        width = int(code.max()) + 1
        for rows, blocks in ((code[:len(a)], train_blocks), (code[len(a):], test_blocks)):
            blocks.append(sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), rows)), shape=(len(rows), width)))
    return sp.hstack(train_blocks).tocsr(), sp.hstack(test_blocks).tocsr()


def _crosses(frame: pd.DataFrame, styles: np.ndarray, by_segment: bool) -> list[np.ndarray]:
    """Key arrays: creative, propensity cell, and per style dimension one (category, true segment, style value)
    cross, or one (category, attribute, code, style value) cross per attribute."""
    keys = [frame["creative_id"].to_numpy(), (2 * frame["user_active"] + frame["is_impulse_purchase_user"]).to_numpy()]
    cat = frame["category"].to_numpy()
    for j in range(styles.shape[1]):
        if by_segment:
            keys.append((cat * 16 + frame["segment"].to_numpy()) * 64 + styles[:, j])
        else:
            keys += [((cat * 32 + a) * 32 + frame[attr].to_numpy()) * 64 + styles[:, j] for a, attr in enumerate(ATTRS)]
    return keys


def _lookups(train: pd.DataFrame, test: pd.DataFrame, truth: Truth, y: np.ndarray) -> dict:
    """The oracle, the smoothed click-rate lookups and the rungs' references."""
    propensity = _rate(train, test, ["user_active", "is_impulse_purchase_user"], prior=10)
    creative = _rate(train, test, ["creative_id"], prior=50)
    return {
        "oracle": auroc(truth.click_probability(test, test["creative_id"].to_numpy()), y),
        "creative_ctr": auroc(creative, y),
        "creative_ctr_x_propensity": auroc(creative * propensity, y),
        "creative_x_segment_ctr": auroc(_rate(train, test, ["creative_id", "segment"], prior=20) * propensity, y),
        "rung_reference": {r: auroc(v, y) for r, v in truth.rung_logits(test, test["creative_id"].to_numpy()).items()},
    }


def _linear(train: pd.DataFrame, test: pd.DataFrame, y: np.ndarray, warehouse: str, epochs: int) -> dict:
    """Logistic regression on PAAG's frozen image features: full batch, and minibatch as PAAG trains."""
    out = {}
    bank = FeatureBank.load(warehouse, TrainConfig.text_encoder, TrainConfig.image_encoder)
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
    for epoch in range(epochs):
        for batch in example_batches(warehouse, "train", 512, seed=epoch):
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
    return out


def _cross_models(train: pd.DataFrame, test: pd.DataFrame, truth: Truth, y: np.ndarray) -> dict:
    """Logistic regression on one-hot crosses with the true segments, or with every attribute, and true styles."""
    out = {}
    styles = [truth.creative_style(f["creative_id"].to_numpy()) for f in (train, test)]
    users = np.unique(train["user_id"].to_numpy())
    for name, by_segment, c in (("crosses_segment", True, 1.0), ("crosses_attributes", False, 0.02)):
        xa, xb = _one_hot(_crosses(train, styles[0], by_segment), _crosses(test, styles[1], by_segment))
        by_users = []
        for share in ((1.0,) if by_segment else (0.25, 0.5, 1.0)):  # the first share of the users, C scaled
            rows = np.isin(train["user_id"].to_numpy(), users[:int(len(users) * share)])
            fit = LogisticRegression(C=c * share, max_iter=300).fit(xa[rows], train["clicked"].to_numpy()[rows])
            by_users.append(auroc(fit.decision_function(xb), y))
        out[name] = by_users[-1]
        if not by_segment:
            out[f"{name}_by_users"] = dict(zip(("25%", "50%", "100%"), by_users))
    return out


def run_baselines(cfg: BaselinesConfig) -> dict:
    """Every baseline's test AUROC, printed and written to cfg.report; ConfigError (before any work) when a
    feature table is missing. Returns the report."""
    require_tables(FEATURE_TABLES, cfg.warehouse)
    train, test = _frame(cfg.warehouse, "train"), _frame(cfg.warehouse, "test")
    truth = Truth.from_warehouse(cfg.warehouse)
    for frame in (train, test):
        frame["category"] = truth.products.category[frame["product_id"].to_numpy()]
        frame["segment"] = world.segment_of(truth.spec, frame["category"].to_numpy(), frame)
    y = test["clicked"].to_numpy()
    out = _lookups(train, test, truth, y)
    out.update(_linear(train, test, y, cfg.warehouse, cfg.epochs))
    out.update(_cross_models(train, test, truth, y))
    for name, value in out.items():
        shown = (", ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else
                 ", ".join(f"{k} {v:.4f}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.4f}")
        print(f"{name:<28} {shown}")
    write_report(cfg.report, out)
    return out
