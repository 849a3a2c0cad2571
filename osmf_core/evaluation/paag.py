"""PAAG on the simulated world: the ablation ladder (paper Table 2) and the segment probe.

The ladder: test AUROC of each rung over seeds, against the oracle AUROC of the simulator's true click
probabilities; gap closed = (AUROC - 0.5) / (oracle AUROC - 0.5). Beside each rung, its reference: the
AUROC of the true click logit restricted to the terms that rung's structure can represent
(`Truth.rung_logits`), and the share of that reference's gap the rung closes. A run whose model.pt was
trained with the same model configuration and training settings is reused.

The probe, a diagnostic for the regroup's groups: does the trained PAAG separate the hidden segments? For
every `every`-th product with at least `min_users` viewers, K-Means (scikit-learn, the true number of
segments) on four representations of its viewers, scored by the adjusted Rand index against the hidden
segments (1 = the segments exactly, 0 = unrelated):
  eut       e_u|t, what the regroup clusters
  eu        e_u, the user embedding without the product
  delta     e_u|t - e_u, the product-aware part
  profile   the model's user-branch logit h_u(e_u|c) for each creative of the product, centred per user
            (what the model predicts this user prefers among the product's creatives)
Also the K that the mean silhouette picks (2..5) for each.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError, default_warehouse
from osmf_core.data.flags import add_config_args
from osmf_core.data.reader import FeatureBank, read_frame, require_tables
from osmf_core.data.reports import write_report
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.models.paag import RUNGS, load_model
from osmf_core.training.paag import FEATURE_TABLES, MODEL_FILE, TrainConfig, auroc, predict, train, training_settings
from osmf_core.world import model as world
from osmf_core.world.truth import Truth

ATTRS = list(C.USER_ATTRIBUTES)
# TrainConfig and PAAGConfig fields that are no flags of the ladder: set for each run, or (the feature sizes)
# from the feature tables by the training
PER_RUN = ("rung", "seed", "save_every", "text_dim", "image_dim")
ABLATION_DIR = "runs/paag_ablation"


@dataclass
class AblationConfig:
    # the ladder
    rungs: tuple[str, ...] = RUNGS  # rungs to train, in this order
    seeds: int = 2  # training seeds per rung (for the spread)
    report: str = "reports/paag_ablation.json"  # JSON report
    # each run: these settings, less PER_RUN; out_dir holds one <rung>-seed<N> folder per run
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir=ABLATION_DIR))

    def __post_init__(self):
        self.rungs = tuple(self.rungs)
        unknown = set(self.rungs) - set(RUNGS)
        if unknown:
            raise ValueError(f"unknown rungs {sorted(unknown)}; choose from {RUNGS}")
        if not self.rungs:
            raise ValueError(f"rungs: name at least one of {RUNGS}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


def add_ablation_args(ap) -> None:
    """The ladder's flags: AblationConfig's, with TrainConfig's and PAAGConfig's less PER_RUN; --out-dir
    defaults to ABLATION_DIR."""
    add_config_args(ap, AblationConfig, skip=PER_RUN, defaults={"out_dir": ABLATION_DIR})


def reusable_model(path: Path, cfg: TrainConfig):
    """The model at `path` if it has this configuration and training settings (then it is reused), else None.
    Models saved before the settings were stored are matched on the model configuration alone."""
    if not path.exists():
        return None
    model, blob = load_model(path)
    same = model.cfg.to_dict() == cfg.model.to_dict() and blob.get("training", training_settings(cfg)) == \
        training_settings(cfg)
    print(f"{path}: {'reused' if same else 'trained with other settings; training again'}")
    return model if same else None


def run_ablation(cfg: AblationConfig) -> dict:
    """Train (or reuse) every rung for every seed, print the ladder and write cfg.report; ConfigError (before
    any work) when a feature table is missing. Returns the report."""
    wh = cfg.train.warehouse
    require_tables(FEATURE_TABLES, wh)
    bank = FeatureBank.load(wh, cfg.train.text_encoder, cfg.train.image_encoder)
    results: dict[str, list[float]] = {}
    oracle, reference = None, {}
    for rung in cfg.rungs:
        for seed in range(cfg.seeds):
            out = Path(cfg.train.out_dir) / f"{rung}-seed{seed}"
            run = replace(cfg.train, model=replace(cfg.train.model, rung=rung), seed=seed, out_dir=str(out),
                          save_every=10 ** 9)
            t0 = time.perf_counter()
            model = reusable_model(out / MODEL_FILE, run)
            if model is None:
                train(run)
                model, _ = load_model(out / MODEL_FILE)
            scores, labels, rows = predict(model, bank, wh, "test")
            results.setdefault(rung, []).append(auroc(scores, labels))
            print(f"{rung:<10} seed {seed}: AUROC {results[rung][-1]:.4f} ({time.perf_counter() - t0:.0f}s)")
            if oracle is None:
                truth = Truth.from_warehouse(wh)
                oracle = auroc(truth.click_probability(rows, rows["creative_id"]), labels)
                reference = {r: auroc(v, labels) for r, v in truth.rung_logits(rows, rows["creative_id"]).items()}
    mean = {r: float(np.mean(v)) for r, v in results.items()}
    std = {r: float(np.std(v)) for r, v in results.items()}
    gap = (mean["full"] - 0.5) / (oracle - 0.5) if "full" in mean else None
    print(f"\n{'rung':<10} {'AUROC':>8} {'± std':>8} {'gap closed':>11} {'reference':>10} {'of its gap':>11}")
    for r in cfg.rungs:
        print(f"{r:<10} {mean[r]:>8.4f} {std[r]:>8.4f} {(mean[r] - 0.5) / (oracle - 0.5):>10.1%} "
              f"{reference[r]:>10.4f} {(mean[r] - 0.5) / (reference[r] - 0.5):>10.1%}")
    print(f"{'oracle':<10} {oracle:>8.4f}")
    report = {"auroc": mean, "auroc_std": std, "oracle_auroc": oracle, "gap_closed": gap,
              "reference_auroc": {r: reference[r] for r in cfg.rungs},
              "seeds": cfg.seeds, "epochs": cfg.train.epochs, "neg_rate": cfg.train.neg_rate}
    write_report(cfg.report, report)
    return report


@dataclass
class ProbeConfig:
    # data
    # Delta warehouse with raw.* and feat.* tables; default $OSMF_WAREHOUSE, else ./warehouse
    warehouse: str = field(default_factory=default_warehouse)
    model: str = "runs/paag/model.pt"  # trained PAAG model.pt (make train-paag)
    # the probe
    every: int = 7  # probe every N-th product id
    min_users: int = 200  # products with fewer viewers are left out
    report: str = "reports/paag_probe.json"  # JSON report

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.min_users < 1:
            raise ValueError(f"min_users must be >= 1, got {self.min_users}")


def _probe_product(emb: PAAGEmbedder, users: pd.DataFrame, uid: np.ndarray, pid: int, truth: Truth) -> dict:
    """ARI against the hidden segments, and the silhouette's K, of each representation of one product's viewers."""
    u = users.loc[uid]
    attrs = u[ATTRS].to_numpy(np.int64)
    seg = world.segment_of(truth.spec, truth.products.category[np.full(len(uid), pid)], {k: u[k].to_numpy() for k in ATTRS})
    with torch.no_grad():
        eu = emb.model.user_embedding(torch.from_numpy(attrs))
        eut = emb(attrs, np.full(len(uid), pid))
        prof = torch.from_numpy(emb.profile(eut, np.full(len(uid), pid)))  # zero padding: no effect on K-Means
        eut = torch.from_numpy(eut)
    row = {"product_id": pid, "category": world.CATEGORY_NAMES[truth.products.category[pid]], "users": len(uid)}
    for name, x in {"eut": eut, "eu": eu, "delta": eut - eu, "profile": prof}.items():
        x = x.numpy()
        row[f"ari_{name}"] = adjusted_rand_score(seg, KMeans(len(np.unique(seg)), n_init=4, random_state=0)
                                                 .fit_predict(x))
        row[f"k_{name}"] = max(range(2, 6), key=lambda k: silhouette_score(
            x, KMeans(k, n_init=4, random_state=0).fit_predict(x), sample_size=2000, random_state=0))
    return row


def run_probe(cfg: ProbeConfig) -> dict:
    """Probe every cfg.every-th product, print each row and the means, write cfg.report; ConfigError (before
    any work) when a table or the model is missing. Returns the report."""
    wh = cfg.warehouse
    require_tables((C.USERS, C.CREATIVES, C.IMPRESSIONS, *FEATURE_TABLES), wh)
    if not Path(cfg.model).is_file():
        raise ConfigError(f"--model {cfg.model} does not exist: train PAAG first (make train-paag)")
    users = read_frame(C.USERS, wh, ["user_id", *ATTRS]).set_index("user_id")
    creatives = read_frame(C.CREATIVES, wh, ["creative_id", "product_id"])
    imps = read_frame(C.IMPRESSIONS, wh, ["user_id", "creative_id"]).merge(creatives, on="creative_id")
    truth = Truth.from_warehouse(wh)
    emb = PAAGEmbedder(cfg.model, wh, profiles=True)
    rows = []
    for pid in range(0, len(truth.products.category), cfg.every):
        uid = np.unique(imps.loc[imps.product_id == pid, "user_id"].to_numpy())
        if len(uid) < cfg.min_users:
            continue
        rows.append(_probe_product(emb, users, uid, pid, truth))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    mean = df.drop(columns=["product_id", "category"]).mean().to_dict()
    print(pd.Series(mean).to_string())
    report = {"products": len(df), "mean": mean, "per_product": rows}
    write_report(cfg.report, report)
    return report
