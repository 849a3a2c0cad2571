"""Does the trained PAAG separate the simulator's hidden segments? A diagnostic for the regroup's groups.

For every --every-th product with at least --min-users viewers, K-Means (scikit-learn, the true number of
segments) on four representations of its viewers, scored by the adjusted Rand index against the hidden
segments (1 = the segments exactly, 0 = unrelated):
  eut       e_u|t, what the regroup clusters
  eu        e_u, the user embedding without the product
  delta     e_u|t - e_u, the product-aware part
  profile   the model's user-branch logit h_u(e_u|c) for each creative of the product, centred per user
            (what the model predicts this user prefers among the product's creatives)
Also the K that the mean silhouette picks (2..5) for each. Writes reports/paag_probe.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from osmf_core.data import catalog as C
from osmf_core.world import model as world
from osmf_core.data.config import ConfigError, config_error, default_warehouse
from osmf_core.data.reports import write_report
from osmf_core.data.reader import require_tables
from osmf_core.data.reader import read_frame
from osmf_core.training.paag import FEATURE_TABLES
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.world.truth import Truth

ATTRS = list(C.USER_ATTRIBUTES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", default=default_warehouse())
    ap.add_argument("--model", default="runs/paag/model.pt")
    ap.add_argument("--every", type=int, default=7, help="probe every N-th product id")
    ap.add_argument("--min-users", type=int, default=200)
    ap.add_argument("--report", default="reports/paag_probe.json")
    args = ap.parse_args(argv)
    wh = args.warehouse
    try:
        require_tables((C.USERS, C.CREATIVES, C.IMPRESSIONS, *FEATURE_TABLES), wh)
        if not Path(args.model).is_file():
            raise ConfigError(f"--model {args.model} does not exist: train PAAG first (make train-paag)")
    except ConfigError as e:
        return config_error("paag_probe", e)
    users = read_frame(C.USERS, wh, ["user_id", *ATTRS]).set_index("user_id")
    creatives = read_frame(C.CREATIVES, wh, ["creative_id", "product_id"])
    imps = read_frame(C.IMPRESSIONS, wh, ["user_id", "creative_id"]).merge(creatives, on="creative_id")
    truth = Truth.from_warehouse(wh)
    emb = PAAGEmbedder(args.model, wh, profiles=True)
    model = emb.model
    rows = []
    for pid in range(0, len(truth.products.category), args.every):
        uid = np.unique(imps.loc[imps.product_id == pid, "user_id"].to_numpy())
        if len(uid) < args.min_users:
            continue
        u = users.loc[uid]
        attrs = u[ATTRS].to_numpy(np.int64)
        seg = world.segment_of(truth.products.category[np.full(len(uid), pid)], {k: u[k].to_numpy() for k in ATTRS})
        with torch.no_grad():
            eu = model.user_embedding(torch.from_numpy(attrs))
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
        rows.append(row)
        print(row, flush=True)
    df = pd.DataFrame(rows)
    mean = df.drop(columns=["product_id", "category"]).mean().to_dict()
    print(pd.Series(mean).to_string())
    write_report(args.report, {"products": len(df), "mean": mean, "per_product": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
