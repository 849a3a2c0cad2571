"""The Figure 3 analog (jobs/eval_grm.py): Pair Accuracy of the group-aware reward model against a
group-agnostic one and against the number of percentile points in the group token, over seeds, on held-out
products. Each variant is trained from the same pre-trained G-MLLM (<out_dir>/<variant>/seed<k>) and scored
on the test pairs twice: against the pairs' observed labels (the group CTRs of the log, as the paper scores)
and against the simulator's true labels (expected CTR of each creative over the group's users).

The "style_codes" rows are a reference ceiling, not a model variant: a logistic regression that reads
what only the simulator knows -- the style codes (scene, palette, lighting, mood) of both creatives
(Truth.creative_style) -- crossed with the product's category and the group's features (style_codes) or
with the category alone (style_codes_no_group), trained on the train pairs and scored on the test pairs.
The "true_order" rows predict with the simulator's expected CTRs: within the pair's group
(true_order_group: on the observed labels, how often the log's CTR order is right) and over all the
product's viewers (true_order_product: the best any reward model without the group can do; on true labels,
1 minus it is the most the group token can add).
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from osmf_core.data import catalog as C
from osmf_core.data.audiences import AUDIENCE_TABLES, audiences
from osmf_core.data.config import ConfigError
from osmf_core.data.reader import read_columns, read_frame, run_of
from osmf_core.data.reports import write_report
from osmf_core.models.gmllm.grm import GRM
from osmf_core.models.gmllm.model import GroupLlava
from osmf_core.training.gmllm import MODEL_SUBDIR
from osmf_core.training.grm import GRMConfig, pair_metrics, score_pairs, train_grm
from osmf_core.world.styles import DIMS, STYLE_DIMS
from osmf_core.world.truth import Truth

PAIR_COLUMNS = ["product_id", "group_id", "creative_a", "creative_b", "group_features", "label"]

# name: (use_group, n_points, pairs it trains on); points_10 is the full GRM (10 points is the whole set).
# no_group is the paper's group-agnostic baseline (CAIG's reward model: product-level CTR pairs, no group);
# no_group_same_pairs answers another question: the group token's worth on the very pairs the GRM learns from.
VARIANTS = {
    "grm": (True, -1, "group"), "no_group": (False, -1, "product"), "points_0": (True, 0, "group"),
    "points_1": (True, 1, "group"), "points_5": (True, 5, "group"), "no_group_same_pairs": (False, -1, "group"),
}
DEFAULT_VARIANTS = ("grm", "no_group", "points_0", "points_1", "points_5")
PER_VARIANT = ("use_group", "n_points", "pairs", "seed", "out_dir", "progress")  # GRMConfig fields set per run


@dataclass
class GRMEvalConfig:
    # variants
    # comma-separated subset of grm, no_group, points_0, points_1, points_5 and no_group_same_pairs
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    seeds: int = 3  # every variant is trained with seeds 0 .. seeds-1
    reference: bool = True  # the reference rows (style_codes, true_order) and the vision probe (--no-reference)
    # only the vision probe: per style dimension, what a linear model reads from the G-MLLM's image features and
    # from the pixels (no reward model is trained)
    probe_only: bool = False
    # output
    out_dir: str = "runs/eval_grm"  # one run per variant and seed: <out-dir>/<variant>/seed<k>
    report: str = "reports/eval_grm.json"  # the JSON report
    # the reward models' training settings, shared by every variant (--gmllm, --epochs, --lr, --head-lr,
    # --pooling ...), less PER_VARIANT
    train: GRMConfig = field(default_factory=GRMConfig)

    def __post_init__(self):
        self.variants = tuple(self.variants)
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}")
        if not self.variants:
            raise ValueError(f"--variants names none of {','.join(VARIANTS)}")
        if self.seeds < 1 and not self.probe_only:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.train.pooling not in GRM.POOLINGS:
            raise ValueError(f"pooling must be one of {GRM.POOLINGS}, got {self.train.pooling!r}")


def checked(cfg: GRMEvalConfig) -> GRMEvalConfig:
    """`cfg` with the run date resolved (feat.grm_examples' latest unless given), once the G-MLLM is found;
    ConfigError (one line, before any work) otherwise."""
    if not Path(cfg.train.gmllm).is_dir():
        raise ConfigError(f"no G-MLLM at {cfg.train.gmllm}: run make pretrain-gmllm")
    run_date = run_of(C.GRM_EXAMPLES, cfg.train.warehouse, cfg.train.run_date, needs=AUDIENCE_TABLES)
    return replace(cfg, train=replace(cfg.train, run_date=run_date))


def pair_ctrs(warehouse: str, run_date: str, pairs: dict, by_group: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's expected CTR of each pair's two creatives over the users of the pair's group, or with
    by_group=False over all the viewers of its product (every group of the product together)."""
    truth = Truth.from_warehouse(warehouse)
    members = audiences(warehouse, run_date, np.unique(pairs["product_id"]))
    who = {k: g for k, g in members.groupby(["product_id", "group_id"] if by_group else "product_id")}
    cache: dict = {}

    def ctr(pid: int, gid: int, cid: int) -> float:
        audience = (pid, gid) if by_group else pid
        if (audience, cid) not in cache:
            cache[(audience, cid)] = truth.expected_ctr(truth.creative_style([cid])[0], pid, who[audience])
        return cache[(audience, cid)]
    rows = list(zip(pairs["product_id"], pairs["group_id"], pairs["creative_a"], pairs["creative_b"]))
    return (np.array([ctr(p, g, a) for p, g, a, _ in rows]), np.array([ctr(p, g, b) for p, g, _, b in rows]))


def true_labels(warehouse: str, run_date: str, scores: dict, by_group: bool = True) -> np.ndarray:
    """1 where creative_a has the higher expected CTR over the users of the pair's group (simulator truth);
    by_group=False: over all the viewers of the pair's product, the order a group-agnostic model can know."""
    a, b = pair_ctrs(warehouse, run_date, scores, by_group)
    return (a > b).astype(int)


def true_order_reference(warehouse: str, run_date: str, pairs: dict, truth_group: np.ndarray) -> dict[str, dict]:
    """Pair accuracy of the true order itself on the test pairs (with their true labels in the group,
    `true_labels`): within the group (`true_order_group`: how often the observed labels are right) and over the
    product's viewers (`true_order_product`: the best a reward model without the group can do, so the most a
    group token can add is the difference on true labels)."""
    key = pairs["product_id"] * 1000 + pairs["group_id"]
    out = {}
    for name, order in (("true_order_group", truth_group),
                        ("true_order_product", true_labels(warehouse, run_date, pairs, by_group=False))):
        p = order.astype(float)
        out[name] = {"pair_accuracy": round(pair_metrics(p, 1 - p, pairs["label"], key)["pair_accuracy"], 4),
                     "pair_accuracy_true": round(pair_metrics(p, 1 - p, truth_group, key)["pair_accuracy"], 4)}
    return out


def vision_probe(warehouse: str, gmllm: str, folds: int = 3, thumb: int = 16) -> dict[str, dict]:
    """How much of each style dimension a linear model reads, per creative, from what the reward model sees
    of it (the G-MLLM's projected image features: averaged over the patches, as the GRM's "bilinear" pooling
    reads them, and side by side, as the language model and the "patches" pooling read them) and from the
    pixels themselves (thumb x thumb RGB thumbnails): cross-validated accuracy of an L2 logistic regression,
    beside the majority share. A dimension the pixels show and the features do not is lost on the way."""
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    frame = read_frame(C.CREATIVES, warehouse, ["creative_id", "image"]).sort_values("creative_id")
    styles = Truth.from_warehouse(warehouse).creative_style(frame["creative_id"].to_numpy())
    model = GroupLlava.load(gmllm)
    feats = []
    with torch.no_grad():
        for lo in range(0, len(frame), 256):
            out = model.llava.model.get_image_features(pixel_values=model.pixels(frame["image"].iloc[lo:lo + 256]))
            feats += [o.float().numpy() for o in out.pooler_output]  # (patches, hidden) per creative
    feats = np.stack(feats)
    thumbs = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((thumb, thumb), Image.BILINEAR),
                                  dtype=np.float32).ravel() / 255.0 for b in frame["image"]])
    out = {}
    for j, dim in enumerate(DIMS):
        y = styles[:, j]
        row = {"values": len(STYLE_DIMS[dim]), "majority": float(np.bincount(y).max() / len(y))}
        for name, x in (("gmllm_mean", feats.mean(1)), ("gmllm_patches", feats.reshape(len(feats), -1)),
                        ("pixels", thumbs)):
            x = (x - x.mean(0)) / (x.std(0) + 1e-6)
            cv = StratifiedKFold(folds, shuffle=True, random_state=0)
            row[name] = float(cross_val_score(LogisticRegression(C=0.1, max_iter=3000), x, y, cv=cv).mean())
        out[dim] = row
    return out


def read_pairs(warehouse: str, run_date: str, split: str) -> dict:
    """The pairs of a split without their images, as numpy columns."""
    parts = list(read_columns(C.GRM_EXAMPLES, warehouse, PAIR_COLUMNS, {"run_date": run_date, "split": split}))
    return {k: np.concatenate([p[k] for p in parts]) for k in PAIR_COLUMNS}


def style_code_features(truth: Truth, pairs: dict, context: np.ndarray) -> np.ndarray:
    """(one-hot style codes of a - those of b) crossed with each row's context vector: antisymmetric in
    (a, b), so with no intercept P(a beats b) + P(b beats a) = 1."""
    def one_hot(cids):
        codes = truth.creative_style(np.asarray(cids, dtype=np.int64))
        return np.concatenate([np.eye(len(STYLE_DIMS[d]))[codes[:, j]] for j, d in enumerate(DIMS)], axis=1)
    d = one_hot(pairs["creative_a"]) - one_hot(pairs["creative_b"])
    return (d[:, :, None] * context[:, None, :]).reshape(len(d), -1)


def style_code_reference(warehouse: str, run_date: str, use_group: bool = True, group_pcs: int = 8,
                         c: float = 0.01) -> dict:
    """Reference ceiling from simulator style codes (see the module docstring); p_ab/p_ba and labels of the
    test pairs, as score_pairs gives them plus the true labels."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    truth = Truth.from_warehouse(warehouse)
    train, test = read_pairs(warehouse, run_date, "train"), read_pairs(warehouse, run_date, "test")
    n_cat = int(truth.products.category.max()) + 1
    cat = {k: np.eye(n_cat)[truth.products.category[p["product_id"].astype(np.int64)]]
           for k, p in (("train", train), ("test", test))}
    ctx = {k: np.concatenate([np.ones((len(v), 1)), v], axis=1) for k, v in cat.items()}
    if use_group:
        g = {k: np.stack(p["group_features"]).astype(np.float64) for k, p in (("train", train), ("test", test))}
        pca = PCA(group_pcs, random_state=0).fit(g["train"])
        ctx = {k: np.concatenate([v, pca.transform(g[k])], axis=1) for k, v in ctx.items()}
    x_train = style_code_features(truth, train, ctx["train"])
    scale = StandardScaler(with_mean=False).fit(x_train)  # no centring: keeps the features antisymmetric
    clf = LogisticRegression(C=c, max_iter=5000, fit_intercept=False).fit(scale.transform(x_train), train["label"])
    swapped = {**test, "creative_a": test["creative_b"], "creative_b": test["creative_a"]}
    out = {k: test[k] for k in ("product_id", "group_id", "creative_a", "creative_b", "label")}
    out["p_ab"] = clf.predict_proba(scale.transform(style_code_features(truth, test, ctx["test"])))[:, 1]
    out["p_ba"] = clf.predict_proba(scale.transform(style_code_features(truth, swapped, ctx["test"])))[:, 1]
    out["label_true"] = true_labels(warehouse, run_date, out)
    return out


def print_probe(probe: dict) -> None:
    print(f"{'style dimension':16s} {'values':>6s} {'majority':>9s} {'G-MLLM mean':>12s} {'G-MLLM patches':>15s} "
          f"{'pixels':>7s}")
    for dim, r in probe.items():
        print(f"{dim:16s} {r['values']:>6d} {r['majority']:>9.3f} {r['gmllm_mean']:>12.3f} {r['gmllm_patches']:>15.3f} "
              f"{r['pixels']:>7.3f}")


def train_variants(cfg: GRMEvalConfig) -> tuple[dict[str, list[dict]], dict, np.ndarray]:
    """Every variant trained and scored once per seed: ({variant: [{"observed", "true"} metrics per seed]}, the
    last run's test pair scores, the test pairs' true labels)."""
    wh, run_date = cfg.train.warehouse, cfg.train.run_date
    results: dict[str, list[dict]] = {n: [] for n in cfg.variants}
    labels_true = s = None
    for seed in range(cfg.seeds):
        for name in cfg.variants:
            use_group, n_points, pairs = VARIANTS[name]
            out = Path(cfg.out_dir) / name / f"seed{seed}"
            shutil.rmtree(out, ignore_errors=True)  # an evaluation trains from scratch, never resumes
            run = replace(cfg.train, use_group=use_group, n_points=n_points, pairs=pairs, seed=seed, out_dir=str(out),
                          progress=False)
            train_grm(run)
            s = score_pairs(GRM.load(out / MODEL_SUBDIR), wh, run_date, max_len=run.max_len)
            if labels_true is None:
                labels_true = true_labels(wh, run_date, s)
            key = s["product_id"] * 1000 + s["group_id"]
            observed = pair_metrics(s["p_ab"], s["p_ba"], s["label"], key)
            true = pair_metrics(s["p_ab"], s["p_ba"], labels_true, key)
            results[name].append({"observed": observed, "true": true})
            print(f"[eval_grm] seed {seed} {name:9s}: pair accuracy {observed['pair_accuracy']:.4f} (observed "
                  f"labels), {true['pair_accuracy']:.4f} (true labels); symmetry error "
                  f"{observed['symmetry_error']:.4f}", flush=True)
    return results, s, labels_true


def reference_rows(cfg: GRMEvalConfig, scores: dict, labels_true: np.ndarray) -> dict[str, dict]:
    """The reference ceilings (style_codes with and without the group, the true orders): not model variants."""
    wh, run_date = cfg.train.warehouse, cfg.train.run_date
    out = {}
    for ref, use_group in (("style_codes", True), ("style_codes_no_group", False)):
        r = style_code_reference(wh, run_date, use_group)
        key = r["product_id"] * 1000 + r["group_id"]
        obs = pair_metrics(r["p_ab"], r["p_ba"], r["label"], key)
        tru = pair_metrics(r["p_ab"], r["p_ba"], r["label_true"], key)
        out[ref] = {"pair_accuracy": round(obs["pair_accuracy"], 4),
                    "pair_accuracy_true": round(tru["pair_accuracy"], 4),
                    "symmetry_error": round(obs["symmetry_error"], 6)}
    out.update(true_order_reference(wh, run_date, scores, labels_true))
    return out


def run_figure3(cfg: GRMEvalConfig) -> dict:
    """The whole evaluation (`cfg` as `checked` gives it: its run date resolved): writes and returns the
    report and prints the table; with probe_only, the vision probe alone."""
    t = cfg.train
    if cfg.probe_only:
        probe = vision_probe(t.warehouse, t.gmllm)
        print_probe(probe)
        report = {"vision_probe": probe, "run_date": str(t.run_date)}
        write_report(cfg.report, report)
        return report
    names = cfg.variants
    results, s, labels_true = train_variants(cfg)

    def stat(name: str, labels: str, metric: str) -> tuple[float, float]:
        v = np.array([r[labels][metric] for r in results[name]])
        return float(v.mean()), float(v.std())
    report = {"pair_accuracy": {}, "pair_accuracy_std": {}, "pair_accuracy_true": {}, "pair_accuracy_true_std": {}}
    for n in names:
        for labels, suffix in (("observed", ""), ("true", "_true")):
            mean, std = stat(n, labels, "pair_accuracy")
            report[f"pair_accuracy{suffix}"][n], report[f"pair_accuracy{suffix}_std"][n] = round(mean, 4), round(std, 4)
    if "grm" in names:  # the full GRM reads all 10 points
        for k in ("pair_accuracy", "pair_accuracy_std", "pair_accuracy_true", "pair_accuracy_true_std"):
            report[k]["points_10"] = report[k]["grm"]
        report["worst_group_accuracy"] = round(stat("grm", "observed", "worst_group_accuracy")[0], 4)
        report["worst_group_accuracy_true"] = round(stat("grm", "true", "worst_group_accuracy")[0], 4)
        report["symmetry_error"] = round(stat("grm", "observed", "symmetry_error")[0], 4)
        report["per_group"] = results["grm"][0]["observed"]["per_group"]
    if cfg.reference:  # reads simulator style codes: a ceiling, not a variant
        report["reference"] = reference_rows(cfg, s, labels_true)
        report["vision_probe"] = vision_probe(t.warehouse, t.gmllm)
    report.update(seeds=cfg.seeds, run_date=str(t.run_date), test_pairs=results[names[0]][0]["observed"]["pairs"],
                  epochs=t.epochs, lr=t.lr, head_lr=t.head_lr or t.lr, train_vision=t.train_vision,
                  train_lm=t.train_lm, pooling=t.pooling)
    write_report(cfg.report, report)
    print(f"{'variant':10s} {'observed':>16s} {'true labels':>16s}")
    for n in report["pair_accuracy"]:
        print(f"{n:10s} {report['pair_accuracy'][n]:.4f} ± {report['pair_accuracy_std'][n]:.4f}"
              f"   {report['pair_accuracy_true'][n]:.4f} ± {report['pair_accuracy_true_std'][n]:.4f}")
    for ref, r in report.get("reference", {}).items():
        what = "the true expected-CTR order" if ref.startswith("true_order") else "reads simulator style codes"
        print(f"{ref:10s} {r['pair_accuracy']:.4f}            {r['pair_accuracy_true']:.4f}"
              f"            (reference ceiling: {what}, not a model)")
    if "vision_probe" in report:
        print_probe(report["vision_probe"])
    if "grm" in names:
        print(f"worst group (>= 5 pairs) {report['worst_group_accuracy']:.4f}; symmetry error "
              f"{report['symmetry_error']:.4f} -> {cfg.report}")
    return report
