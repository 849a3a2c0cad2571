"""Per-product K-Means with K chosen by the mean silhouette (paper Algorithm 1), batched over products.

Many small products are clustered in one call: their users are padded into one (P, N, d) tensor, and
every K of the range and every restart run together as L = (#K x restarts) labelings per product, with
the centroids of a labeling beyond its K masked out. k-means++ seeding and Lloyd iterations are tensor
operations over (P, L, N, K_max); the best restart per K (least inertia) is scored by the silhouette.

The silhouette (osmf_core.grouping.silhouette) of each K's best restart picks K:
  exact    up to `exact_max` users: all pairwise distances, in float64.
  sampled  above: the exact silhouette of `sample_size` random users among themselves, as scikit-learn's
           silhouette_score(sample_size=) does (the error against the exact value is measured by `make
           bench-regroup` and written to its report; `silhouette_sampled` gives s(i) of anchor users
           against ALL users, chunked, which the benchmark uses to compute the exact value).
Products with more than `fit_max` users fit their centroids on a random `fit_max` users; every user is
then assigned to its nearest centroid. Above exact_max, the restarts are seeded and pruned on a random
`seed_max` of those users, and only the best restart of each K runs on all of them. Restarts are pruned: after `prune_after` Lloyd iterations only the
restart of least inertia of each K goes on to convergence (the other restarts of a K rarely overtake it
later, and they would cost most of the iterations).

Group features (section 3.2, eq. 6): the centroid and one point per entry of the percentile set at that
percentile of the members' distances to the centroid. A point is never one user's embedding: it is the
mean of the `point_users` members nearest that distance (the j-th repeat of a percentile takes the
j-th disjoint block of them), and groups smaller than `min_group_size` are merged into the nearest
group first, so that no published feature describes fewer than `point_users` users.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from osmf_core.grouping.silhouette import silhouette_exact, silhouette_one

PERCENTILES = (15, 15, 55, 55, 55, 95, 95, 95, 95, 95)  # paper 5.1: denser in the outer region


@dataclass(frozen=True)
class ClusterConfig:
    k_min: int = 2
    k_max: int = 5
    restarts: int = 32  # k-means++ seedings per K; the least inertia wins (bench-regroup: K* stability)
    max_iter: int = 60
    tol: float = 1e-5  # stop when no centroid moves more than tol x the data's spread
    exact_max: int = 3000  # exact silhouette up to this many users, sampled above
    sample_size: int = 3000  # anchor users of the sampled silhouette
    fit_max: int = 20_000  # K-Means fitted on at most this many users, then all assigned
    seed_max: int = 2_000  # above exact_max: restarts seeded and pruned on at most this many of the fit users
    prune_after: int = 5  # Lloyd iterations of every restart before only the best per K goes on (0: never)
    batch_floats: int = 1 << 25  # memory budget of one batched call, in float32 elements (128 MiB)
    pad_ratio: float = 1.25  # a batch of small products spans sizes n..pad_ratio x n (little padding)
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        if self.restarts < 1 or self.max_iter < 1 or self.sample_size < 10 or self.exact_max < 10:
            raise ValueError("restarts, max_iter >= 1 and exact_max, sample_size >= 10")
        if self.prune_after < 0:
            raise ValueError(f"prune_after must be >= 0, got {self.prune_after}")
        if self.fit_max < self.sample_size:
            raise ValueError("fit_max must be >= sample_size")
        if self.seed_max <= self.k_max:
            raise ValueError(f"seed_max must be > k_max, got {self.seed_max}")
        if self.pad_ratio < 1:
            raise ValueError(f"pad_ratio must be >= 1, got {self.pad_ratio}")

    @property
    def ks(self) -> list[int]:
        return list(range(self.k_min, self.k_max + 1))


@dataclass
class Clustering:
    """The result for one product."""

    k_star: int
    silhouette: float  # mean silhouette at k_star
    silhouettes: dict[int, float]  # per K of the range (-1 where K had fewer than 2 non-empty clusters)
    labels: np.ndarray  # (n,) int, 0..k_star-1
    centroids: np.ndarray  # (k_star, d)
    sampled: bool = False  # silhouette estimated from anchors
    fit_on: int = 0  # users the centroids were fitted on
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- kernels
def _sqdist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x (P, N, d), c (P, L, K, d) -> squared distances (P, L, N, K), clamped at 0."""
    x2 = (x * x).sum(-1)[:, None, :, None]
    c2 = (c * c).sum(-1)[:, :, None, :]
    return (x2 + c2 - 2.0 * torch.einsum("pnd,plkd->plnk", x, c)).clamp_min_(0.0)


def _draw(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row of w (R, N), drawn with probability proportional to w (>= 0, positive row sums):
    one uniform per row against the cumulative sums (torch.multinomial draws N exponentials per row)."""
    c = w.to(torch.float64).cumsum(1)
    total = c[:, -1:]
    u = torch.minimum(torch.rand(len(w), 1, generator=gen, dtype=torch.float64) * total,
                      torch.nextafter(total, torch.zeros_like(total)))  # u < total even after rounding
    return torch.searchsorted(c, u, right=True)[:, 0]  # the first c > u: an index of positive weight


def _kmeanspp(x, mask, kvalid, gen, restarts: int) -> torch.Tensor:
    """k-means++ seeding of the L labelings per product at once. x (P,N,d), mask (P,N), kvalid (L,K) K-major,
    restarts inner (see _labelings). The first k centres of a k-means++ sequence are a k-means++ seeding of
    k, so each restart draws one sequence of K_max centres and every K takes its first k: K_max - 1 draws per
    restart instead of per labeling."""
    p, n, d = x.shape
    r, kmax = restarts, kvalid.shape[1]
    nk = kvalid.shape[0] // restarts
    w = mask.to(x.dtype)[:, None, :].expand(p, r, n).reshape(p * r, n)
    idx = _draw(w, gen).view(p, r)
    take = lambda i: torch.gather(x, 1, i.reshape(p, -1, 1).expand(-1, -1, d)).view(p, r, d)  # noqa: E731
    cents = [take(idx)]
    d2 = _sqdist(x, cents[0][:, :, None])[..., 0]  # (P, restarts, N)
    for _ in range(1, kmax):
        prob = d2.reshape(p * r, n) * w + 1e-12 * w  # duplicates everywhere still leave a valid draw
        idx = _draw(prob, gen).view(p, r)
        cents.append(take(idx))
        d2 = torch.minimum(d2, _sqdist(x, cents[-1][:, :, None])[..., 0])
    return torch.stack(cents, 2).repeat(1, nk, 1, 1)  # (P, nK x restarts, K, d)


def _nearest(score: torch.Tensor) -> torch.Tensor:
    """One-hot of the smallest score along dim 2, ties to the first: (A, L, K, N) -> bool, same shape.
    A min over K values, then K - 1 passes that drop later ties (several times faster than min().indices
    followed by a one-hot)."""
    oh = score == score.amin(2, keepdim=True)
    seen = oh[:, :, 0].clone()
    for k in range(1, oh.shape[2]):
        oh[:, :, k] &= ~seen
        seen |= oh[:, :, k]
    return oh


def _lloyd(x, mask, cents, kvalid, max_iter: int, tol: float):
    """Lloyd iterations on all labelings at once -> (labels (P,L,N), centroids, inertia (P,L)).

    Products whose centroids stopped moving leave the active set, so a batch costs what its products
    need, not max_iter times the slowest one."""
    m = mask.to(x.dtype)
    spread = ((x - (x * m[..., None]).sum(1, keepdim=True) / m.sum(1).clamp_min(1)[:, None, None]) ** 2
              * m[..., None]).sum((1, 2)) / m.sum(1).clamp_min(1)  # (P,) mean squared distance to the mean
    pen = torch.zeros(kvalid.shape, dtype=x.dtype).masked_fill_(~kvalid, float("inf"))
    cents = cents.clone()
    active = torch.arange(x.shape[0])
    padded = not bool(mask.all())  # else no user's one-hot needs its mask
    for _ in range(max_iter):
        xa, ma, ca = x[active], m[active], cents[active]
        # argmin_k |x - c_k|^2 = argmin_k (|c_k|^2 - 2 x.c_k): |x|^2 is the same for every k. Laid out
        # (A, L, K, N), users last: one batched matrix product, and the min over K runs across users
        score = torch.einsum("pnd,plkd->plkn", xa, ca).mul_(-2.0).add_(((ca * ca).sum(-1) + pen)[..., None])
        oh = _nearest(score).to(x.dtype)  # (A, L, K, N)
        if padded:
            oh.mul_(ma[:, None, None, :])
        counts = oh.sum(-1)  # (A, L, K)
        sums = torch.einsum("plkn,pnd->plkd", oh, xa)
        new = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], ca)
        shift = ((new - ca) ** 2).sum(-1).amax((1, 2))  # (A,)
        cents[active] = new
        active = active[shift > tol * spread[active]]
        if len(active) == 0:
            break
    best, labels = (_sqdist(x, cents) + pen[None, :, None, :]).min(-1)
    inertia = (best * m[:, None, :]).sum(-1)
    return labels, cents, inertia


# ------------------------------------------------------------------------------------- driver
def _labelings(cfg: ClusterConfig) -> torch.Tensor:
    """(L, K_max) which centroid slots each labeling uses: K-major, restarts inner."""
    ks = torch.tensor([k for k in cfg.ks for _ in range(cfg.restarts)])
    return torch.arange(cfg.k_max)[None, :] < ks[:, None]


def _pick(labels, cents, inertia, cfg: ClusterConfig):
    """Best restart (least inertia) per K -> labels (P, nK, N), centroids (P, nK, K, d)."""
    p, L, n = labels.shape
    nk = len(cfg.ks)
    best = inertia.view(p, nk, cfg.restarts).argmin(-1)  # (P, nK)
    sel = torch.arange(nk)[None, :] * cfg.restarts + best
    lab = torch.gather(labels, 1, sel[..., None].expand(p, nk, n))
    cen = torch.gather(cents, 1, sel[..., None, None].expand(p, nk, *cents.shape[2:]))
    return lab, cen


def _fit(x, mask, cents, kvalid, cfg: ClusterConfig, full=None):
    """K-Means of every labeling from its seeds -> labels (P, nK, N) and centroids (P, nK, K, d) of the best
    restart of each K. Every restart runs `prune_after` Lloyd iterations; then only the best of each K (least
    inertia) goes on to convergence. With `full` (one product's users (1, N', d), x a sample of them), the
    restarts run on the sample and the best of each K goes on to convergence on all of `full`."""
    first = min(cfg.prune_after or cfg.max_iter, cfg.max_iter)
    labels, cents, inertia = _lloyd(x, mask, cents, kvalid, first, cfg.tol)
    lab, cen = _pick(labels, cents, inertia, cfg)
    if full is not None:
        ones = torch.ones(1, full.shape[1], dtype=torch.bool)
        lab, cen, _ = _lloyd(full, ones, cen, kvalid[::cfg.restarts], cfg.max_iter, cfg.tol)
    elif first < cfg.max_iter:
        lab, cen, _ = _lloyd(x, mask, cen, kvalid[::cfg.restarts], cfg.max_iter - first, cfg.tol)
    return lab, cen


def _finish(ks, sil, labels, cents, n, **extra) -> Clustering:
    """K* = the K of the largest silhouette (the smallest K on ties), labels renumbered densely."""
    sil = [float(s) for s in sil]
    j = int(np.argmax(sil))
    lab = labels[j][:n].cpu().numpy()
    used = np.unique(lab)
    remap = np.full(cents.shape[1], -1)
    remap[used] = np.arange(len(used))
    return Clustering(k_star=len(used), silhouette=sil[j], silhouettes=dict(zip(ks, sil)),
                      labels=remap[lab], centroids=cents[j][used].cpu().numpy().astype(np.float32), **extra)


def _cluster_padded(xs: list[np.ndarray], cfg: ClusterConfig, gen: torch.Generator) -> list[Clustering]:
    """Products small enough for exact silhouettes, padded into one batch."""
    p, n, d = len(xs), max(len(x) for x in xs), xs[0].shape[1]
    x = torch.zeros(p, n, d)
    mask = torch.zeros(p, n, dtype=torch.bool)
    for i, a in enumerate(xs):
        x[i, :len(a)] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        mask[i, :len(a)] = True
    kvalid = _labelings(cfg)
    lab, cen = _fit(x, mask, _kmeanspp(x, mask, kvalid, gen, cfg.restarts), kvalid, cfg)
    sil = silhouette_exact(x, mask, lab, cfg.k_max)  # (P, nK)
    return [_finish(cfg.ks, sil[i], lab[i], cen[i], len(a), fit_on=len(a)) for i, a in enumerate(xs)]


def _cluster_large(a: np.ndarray, cfg: ClusterConfig, gen: torch.Generator, rng: np.random.Generator) -> Clustering:
    """One product above exact_max: fit on at most fit_max users, assign all, sampled silhouette."""
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    fit = x if len(x) <= cfg.fit_max else x[torch.from_numpy(rng.choice(len(x), cfg.fit_max, replace=False))]
    kvalid = _labelings(cfg)
    sample = torch.from_numpy(rng.choice(len(x), cfg.sample_size, replace=False))  # the silhouette's users
    seed = fit if len(fit) <= cfg.seed_max else fit[torch.from_numpy(rng.choice(len(fit), cfg.seed_max, replace=False))]
    ones = torch.ones(1, len(seed), dtype=torch.bool)
    _, cen = _fit(seed[None], ones, _kmeanspp(seed[None], ones, kvalid, gen, cfg.restarts), kvalid, cfg,
                  full=None if seed is fit else fit[None])
    cen = cen[0]  # (nK, K, d)
    nk = len(cfg.ks)
    # assign every user to the nearest centroid of each K
    inf = torch.tensor(float("inf"))
    labels = torch.empty(nk, len(x), dtype=torch.long)
    for lo in range(0, len(x), 65_536):
        d2 = _sqdist(x[None, lo:lo + 65_536], cen[None])[0]  # (nK, n, K)
        labels[:, lo:lo + 65_536] = torch.where(kvalid[::cfg.restarts][:, None, :], d2, inf).argmin(-1)
    sil = silhouette_one(x[sample], labels[:, sample], cfg.k_max)
    return _finish(cfg.ks, sil, labels, cen, len(x), sampled=True, fit_on=len(fit))


def cluster_products(embeddings: list[np.ndarray], cfg: ClusterConfig = ClusterConfig()) -> list[Clustering]:
    """Cluster each product's users (one (n_i, d) array per product, n_i > k_max) and choose K*.

    Small products are sorted by size and packed into batches within the memory budget."""
    for i, e in enumerate(embeddings):
        if len(e) <= cfg.k_max:
            raise ValueError(f"product #{i} has {len(e)} users; clustering needs more than k_max = {cfg.k_max}")
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out: list[Clustering | None] = [None] * len(embeddings)
    small = sorted((i for i, e in enumerate(embeddings) if len(e) <= cfg.exact_max), key=lambda i: len(embeddings[i]))
    L = len(cfg.ks) * cfg.restarts
    batch: list[int] = []

    def cost(n_max: int, p: int) -> int:  # floats of the largest tensors: distances and one-hots
        d = embeddings[small[0]].shape[1]
        return p * n_max * max(L * cfg.k_max * 3 + d, 2 * n_max + 4 * len(cfg.ks) * cfg.k_max)

    def run():
        for i, r in zip(batch, _cluster_padded([embeddings[i] for i in batch], cfg, gen)):
            out[i] = r

    for i in small:
        n = len(embeddings[i])
        if batch and (cost(n, len(batch) + 1) > cfg.batch_floats or n > cfg.pad_ratio * len(embeddings[batch[0]])):
            run()
            batch = []
        batch.append(i)
    if batch:
        run()
    for i, e in enumerate(embeddings):
        if len(e) > cfg.exact_max:
            out[i] = _cluster_large(e, cfg, gen, rng)
    return out  # type: ignore[return-value]
