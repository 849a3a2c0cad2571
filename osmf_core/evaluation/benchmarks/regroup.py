"""Benchmark of the regroup's clustering core against a per-product scikit-learn loop and Spark MLlib
(jobs/bench_regroup.py is its command line).

Data: a power-law mix of product sizes (P(n) ~ n^-2 between 10 and 100,000 users), in one of two kinds
(BenchConfig.mix):
  world     (default) what the job clusters: each product of the mix is a random product of the warehouse
            seen by n users drawn from 100,000 users of the simulated world's population
            (osmf_core.world.model.sample_users, with the bench's seed, so no size runs out of users), embedded by
            the trained PAAG into the space the regroup clusters by default (cluster_on profile: each user's
            preference over the product's creatives, as wide as the product with the most creatives)
  gaussian  a stress test: each product a mixture of 2-5 weakly separated Gaussian groups in d = 128,
            where small products hold no K* to agree on (and the number of groups it was drawn from is known)
Every method gets the same K range (2-5), the same restarts, and one core (torch and BLAS threads = 1;
Spark local[1]), so rows/s is per core.

  osmf          osmf_core.grouping.kmeans.cluster_products on the whole mix (products batched together)
  sklearn_loop  for each product and K: KMeans(n_init=restarts) + silhouette_score (sampled with the
                same sample size above the same exact limit), K* by the largest silhouette
  mllib         for each product and K: pyspark.ml KMeans + ClusteringEvaluator (silhouette), on a
                small subset: every fit is a Spark job

Also: the share of products where osmf and the scikit-learn loop choose the same K*, beside its noise
floor (scikit-learn against itself with other seeds, osmf against itself), by product size and weighted by
rows, and (gaussian mix) how often each method finds the number of groups a product was drawn from; a scaling curve of
osmf over three mixes 10x apart, each run in a fresh process that clusters the mix chunk by chunk as the
Spark job does (its peak memory shows whether memory grows with the number of products); the error of
the sampled silhouette against the exact value; and the whole job's rows/s from gaip.metrics.
Writes reports/bench_regroup.json.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from deltalake import DeltaTable, QueryBuilder
from threadpoolctl import threadpool_limits

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError, SparkSettings, default_warehouse
from osmf_core.data.reports import write_report
from osmf_core.data.spark import build_spark
from osmf_core.grouping.kmeans import ClusterConfig, cluster_products
from osmf_core.grouping.regroup import RegroupConfig
from osmf_core.grouping.silhouette import silhouette_sampled
from osmf_core.models.embedder import PAAGEmbedder
from osmf_core.world.model import ATTRS, n_user_blocks, sample_users

D = 128


@dataclass
class BenchConfig:
    # the mix
    rows: int = 60_000  # rows of the mix compared with scikit-learn
    mix: str = field(default="world", metadata={"choices": ("world", "gaussian")})  # the kind of products (see above)
    warehouse: str = field(default_factory=default_warehouse)  # Delta warehouse: the world mix, the job's rows/s
    model: str = RegroupConfig.model  # trained PAAG (full rung) for the world mix
    seed: int = 0  # seed of the mix and of every method
    # the methods
    restarts: int = ClusterConfig.restarts  # k-means++ restarts per K, for every method (more: a more stable K*, slower)
    mllib_products: int = 6  # products of the mix that MLlib clusters (every fit is a Spark job)
    scaling: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # rows of the three scaling mixes
    chunk_rows: int = 60_000  # rows clustered per call (the job's rows_per_call)
    report: str = "reports/bench_regroup.json"  # where the report goes


def product_sizes(rng: np.random.Generator, total_rows: int, lo: int = 10, hi: int = 100_000) -> list[int]:
    """Sizes drawn from P(n) ~ n^-2 on [lo, hi] (inverse CDF) until they add up to total_rows."""
    sizes, n = [], 0
    while n < total_rows:
        u = rng.random()
        s = int(1.0 / (1.0 / lo - u * (1.0 / lo - 1.0 / hi)))
        s = min(s, total_rows - n) if total_rows - n >= lo else lo
        sizes.append(s)
        n += s
    return sizes


def product(rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
    k = int(rng.integers(2, 6))
    centers = rng.normal(scale=0.45, size=(k, D))
    weights = rng.dirichlet(np.full(k, 3.0))
    labels = rng.choice(k, size=n, p=weights)
    return (centers[labels] + rng.normal(scale=1.0, size=(n, D))).astype(np.float32), k


class WorldMix:
    """Products of the simulated world in the space the regroup clusters (see the module docstring)."""

    def __init__(self, warehouse: str, model: str, seed: int, population: int = 100_000):
        for what, path in (("warehouse", warehouse), ("--model", model)):
            if not Path(path).exists():
                raise ConfigError(f"the world mix needs {what} {path}: run make regroup first, or pass --mix gaussian")
        self.embedder = PAAGEmbedder(model, warehouse, profiles=True)
        self.products = np.array(sorted(self.embedder.creatives))
        blocks = [sample_users(seed, b, population) for b in range(n_user_blocks(population))]
        self.attrs = np.concatenate([np.stack([b[a] for a in ATTRS], 1) for b in blocks])

    def product(self, rng: np.random.Generator, n: int) -> np.ndarray:
        pid = np.full(n, rng.choice(self.products))
        users = self.attrs[rng.choice(len(self.attrs), n, replace=False)]
        return self.embedder.profile(self.embedder(users, pid), pid)


def world_of(cfg: BenchConfig) -> WorldMix | None:
    """The world mix's products, or None for the gaussian mix."""
    return WorldMix(cfg.warehouse, cfg.model, cfg.seed) if cfg.mix == "world" else None


def mix(seed: int, total_rows: int, with_k: bool = False, world: WorldMix | None = None):
    """The products of one mix: each its embeddings, or (embeddings, the number of groups it was drawn from;
    None for the world mix). Gaussian products unless `world` is given."""
    rng = np.random.default_rng(seed)
    for n in product_sizes(rng, total_rows):
        x, k = (world.product(rng, n), None) if world is not None else product(rng, n)
        yield (x, k) if with_k else x


def sklearn_loop(xs, cfg, seed_offset: int = 0) -> list[int]:
    from sklearn.cluster import KMeans  # here, not at the top: a scaling run's peak memory leaves scikit-learn out
    from sklearn.metrics import silhouette_score
    out = []
    for i, x in enumerate(xs):
        best, k_star = -2.0, cfg.k_min
        sample = None if len(x) <= cfg.exact_max else cfg.sample_size
        for k in cfg.ks:
            rs = seed_offset + i
            labels = KMeans(k, n_init=cfg.restarts, max_iter=cfg.max_iter, random_state=rs).fit_predict(x)
            s = silhouette_score(x, labels, sample_size=sample, random_state=rs) if len(set(labels)) > 1 else -1
            if s > best:
                best, k_star = s, k
        out.append(k_star)
    return out


def mllib(xs, cfg) -> float:
    """Seconds for MLlib KMeans + ClusteringEvaluator over K for each product of xs (Spark local[1])."""
    from pyspark.ml.clustering import KMeans  # here, as scikit-learn: a scaling run leaves Spark ML out
    from pyspark.ml.evaluation import ClusteringEvaluator
    from pyspark.ml.linalg import Vectors
    spark = build_spark(SparkSettings(master="local[1]", shuffle_partitions=1, show_progress=False,
                                      app_name="osmf-bench-mllib"))
    frames = [spark.createDataFrame([(Vectors.dense(r.tolist()),) for r in x], ["features"]).cache() for x in xs]
    for f in frames:
        f.count()
    t = time.perf_counter()
    for i, f in enumerate(frames):
        for k in cfg.ks:
            model = KMeans(k=k, seed=i, maxIter=cfg.max_iter, initSteps=2).fit(f)
            ClusteringEvaluator().evaluate(model.transform(f))
    seconds = time.perf_counter() - t
    spark.stop()
    return seconds


def scale_point(cfg: BenchConfig, rows: int) -> dict:
    """Run in a fresh process: cluster a mix of `rows` rows chunk by chunk; time and peak memory."""
    world = world_of(cfg)
    torch.set_num_threads(1)
    ccfg = ClusterConfig(seed=cfg.seed, restarts=cfg.restarts)
    busy, done, products, chunk, held = 0.0, 0, 0, [], 0

    def flush():
        nonlocal busy, done, chunk, held
        t = time.perf_counter()
        cluster_products(chunk, ccfg)
        busy += time.perf_counter() - t
        done, chunk, held = done + held, [], 0

    for x in mix(cfg.seed, rows, world=world):
        chunk.append(x)
        held += len(x)
        products += 1
        if held >= cfg.chunk_rows:
            flush()
    if chunk:
        flush()
    return {"rows": done, "products": products, "seconds": busy, "rows_per_s": done / busy,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def sampled_error(cfg, seed: int) -> list[dict]:
    """|sampled - exact| silhouette of the chosen labels for products above the exact limit."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (5_000, 10_000, 20_000):
        for _ in range(3):
            x, _ = product(rng, n)
            (r,) = cluster_products([x], cfg)
            xt, lab = torch.from_numpy(x), torch.from_numpy(r.labels)[None]
            exact = sum(float(silhouette_sampled(xt, lab, r.k_star, torch.arange(lo, min(lo + 2000, n)))[0])
                        * (min(lo + 2000, n) - lo) for lo in range(0, n, 2000)) / n
            out.append({"users": n, "sampled": r.silhouette, "exact": exact, "abs_error": abs(r.silhouette - exact)})
    return out


def job_rows_per_s(warehouse: str) -> float | None:
    path = C.METRICS.path(warehouse)
    if not Path(path).exists():
        return None
    res = QueryBuilder().register("m", DeltaTable(path)).execute(
        "select run_date, value from m where stage = 'regroup' and name = 'rows_per_s' order by run_date desc limit 1"
    ).read_all()
    vals = res.column("value").to_pylist()
    return float(vals[0]) if vals else None


def agreement(xs, true_k, ours, ours_again, theirs, theirs_again) -> dict:
    """How often the methods choose the same K* (and the generating K, when known), overall, by rows and by
    product size."""
    sizes = np.array([len(x) for x in xs])
    k_osmf, k_sk, k_sk2 = np.array([r.k_star for r in ours]), np.array(theirs), np.array(theirs_again)
    k_true = None if true_k[0] is None else np.array(true_k)
    out = {"all": float(np.mean(k_osmf == k_sk)), "sklearn_vs_itself": float(np.mean(k_sk == k_sk2)),
           "osmf_vs_itself": float(np.mean(k_osmf == np.array([r.k_star for r in ours_again])))}
    # per row: the share of (product, user) rows whose product got the same K*, as the job's rows see it
    out["by_rows"] = {"osmf_vs_sklearn": float(np.average(k_osmf == k_sk, weights=sizes)),
                      "sklearn_vs_itself": float(np.average(k_sk == k_sk2, weights=sizes))}
    # the K each product was drawn with (gaussian mix): how often either method finds it
    out["generating"] = None if k_true is None else {"osmf": float(np.mean(k_osmf == k_true)),
                                                     "sklearn_loop": float(np.mean(k_sk == k_true))}
    out["by_size"] = {}
    for lo, hi in ((10, 30), (31, 100), (101, 1000), (1001, 100_000)):
        m = (sizes >= lo) & (sizes <= hi)
        if m.any():
            band = out["by_size"][f"{lo}-{hi}"] = {"products": int(m.sum()),
                                                   "osmf_vs_sklearn": float(np.mean(k_osmf[m] == k_sk[m])),
                                                   "sklearn_vs_sklearn": float(np.mean(k_sk[m] == k_sk2[m]))}
            if k_true is not None:
                band.update(osmf_finds_generating_k=float(np.mean(k_osmf[m] == k_true[m])),
                            sklearn_finds_generating_k=float(np.mean(k_sk[m] == k_true[m])))
    return out


def show_agreement(a: dict) -> None:
    generating = a["generating"]
    print(f"K* agreement  osmf vs sklearn {a['all']:.1%}; sklearn vs itself (other seeds) {a['sklearn_vs_itself']:.1%}; "
          f"osmf vs itself {a['osmf_vs_itself']:.1%}")
    print(f"  by rows: osmf vs sklearn {a['by_rows']['osmf_vs_sklearn']:.1%}, sklearn vs itself "
          f"{a['by_rows']['sklearn_vs_itself']:.1%}" + ("" if generating is None else
          f"; the generating K found by osmf {generating['osmf']:.1%}, by sklearn {generating['sklearn_loop']:.1%}"))
    for band, v in a["by_size"].items():
        print(f"  users {band:>12}: {v['products']:>4} products, osmf vs sklearn {v['osmf_vs_sklearn']:.1%}, "
              f"sklearn vs itself {v['sklearn_vs_sklearn']:.1%}" + ("" if generating is None else
              f", generating K osmf {v['osmf_finds_generating_k']:.1%} sklearn {v['sklearn_finds_generating_k']:.1%}"))


def bench(cfg: BenchConfig, script: str) -> dict:
    """The whole benchmark, printed as it goes; writes and returns the report. `script` is the job file that
    runs one scaling point (`script --scale-point ROWS ...`) in a fresh process."""
    world = world_of(cfg)
    torch.set_num_threads(1)
    ccfg = ClusterConfig(seed=cfg.seed, restarts=cfg.restarts)
    xs, true_k = map(list, zip(*mix(cfg.seed, cfg.rows, with_k=True, world=world)))
    rows = sum(len(x) for x in xs)
    print(f"{cfg.mix} mix: {len(xs)} products, {rows:,} rows, sizes {min(map(len, xs))}..{max(map(len, xs))}, "
          f"{xs[0].shape[1]} dimensions, {cfg.restarts} restarts")
    t = time.perf_counter()
    ours = cluster_products(xs, ccfg)
    osmf_s = time.perf_counter() - t
    print(f"osmf          {osmf_s:8.1f} s  {rows / osmf_s:>10,.0f} rows/s")
    with threadpool_limits(1):
        t = time.perf_counter()
        theirs = sklearn_loop(xs, ccfg)
        sk_s = time.perf_counter() - t
    print(f"sklearn loop  {sk_s:8.1f} s  {rows / sk_s:>10,.0f} rows/s")
    # the noise floor of that figure: scikit-learn against itself with other seeds, and osmf against itself
    with threadpool_limits(1):
        theirs_again = sklearn_loop(xs, ccfg, seed_offset=1_000_000)
    ours_again = cluster_products(xs, ClusterConfig(seed=cfg.seed + 1, restarts=cfg.restarts))
    agree = agreement(xs, true_k, ours, ours_again, theirs, theirs_again)
    show_agreement(agree)
    rng = np.random.default_rng(cfg.seed + 1)
    subset = [xs[i] for i in rng.choice(len(xs), min(cfg.mllib_products, len(xs)), replace=False)]
    ml_s = mllib(subset, ccfg)
    ml_rows = sum(len(x) for x in subset)
    print(f"mllib         {ml_s:8.1f} s  {ml_rows / ml_s:>10,.0f} rows/s  ({len(subset)} products, {ml_rows:,} rows)")
    scaling = []
    for n in cfg.scaling:
        out = subprocess.run([sys.executable, script, "--scale-point", str(n), "--seed", str(cfg.seed),
                              "--chunk-rows", str(cfg.chunk_rows), "--restarts", str(cfg.restarts),
                              "--mix", cfg.mix, "--warehouse", cfg.warehouse, "--model", cfg.model],
                             check=True, capture_output=True, text=True)
        scaling.append(json.loads(out.stdout.strip().splitlines()[-1]))
        s = scaling[-1]
        print(f"scaling       {s['rows']:>9,} rows {s['products']:>6,} products  {s['rows_per_s']:>10,.0f} rows/s  "
              f"peak RSS {s['peak_rss_mib']:,.0f} MiB")
    errors = sampled_error(ccfg, cfg.seed)
    job = job_rows_per_s(cfg.warehouse)
    report = {
        "mix_kind": cfg.mix,
        "restarts": cfg.restarts,
        "rows_per_s_per_core": {"osmf": rows / osmf_s, "sklearn_loop": rows / sk_s, "mllib": ml_rows / ml_s},
        "speedup_vs_sklearn": sk_s / osmf_s,
        "speedup_vs_mllib": (rows / osmf_s) / (ml_rows / ml_s),
        "kstar_agreement": agree["all"],
        "kstar_agreement_sklearn_vs_itself": agree["sklearn_vs_itself"],
        "kstar_agreement_osmf_vs_itself": agree["osmf_vs_itself"],
        "kstar_agreement_by_users": agree["by_size"],
        "kstar_agreement_by_rows": agree["by_rows"],
        "kstar_finds_generating_k": agree["generating"],
        "scaling": scaling,
        "sampled_silhouette_error": {"max": max(e["abs_error"] for e in errors),
                                     "mean": float(np.mean([e["abs_error"] for e in errors])),
                                     "sample_size": ccfg.sample_size, "cases": errors},
        "job_rows_per_s": job,
        "mix": {"products": len(xs), "rows": rows, "dimensions": int(xs[0].shape[1]), "mllib_products": len(subset),
                "mllib_rows": ml_rows},
    }
    print(f"\nspeedup vs scikit-learn loop {report['speedup_vs_sklearn']:.1f}x, vs MLlib "
          f"{report['speedup_vs_mllib']:.1f}x; K* agreement {agree['all']:.1%}; sampled silhouette error max "
          f"{report['sampled_silhouette_error']['max']:.4f}; whole job "
          + (f"{job:,.0f} rows/s" if job else "not run (make regroup)"))
    write_report(cfg.report, report)
    return report
