"""The mean silhouette (Rousseeuw 1987, as scikit-learn's silhouette_score) that picks K per product:
for a point i in cluster A, a(i) = mean distance to the other points of A, b(i) = least mean distance to
the points of another cluster, s(i) = (b - a) / max(a, b), and s(i) = 0 in a cluster of one.
  exact    all pairwise distances, for Q labelings of P padded products at once: the distances and their
           per-cluster sums (one matrix product) in the data's own precision, the rest in float64
  sampled  s(i) of anchor users against ALL users, chunked (the benchmark's exact value of large products)
  silhouette  one labeling of one product, exact or on a random sample (as silhouette_score(sample_size=))
"""
from __future__ import annotations

import numpy as np
import torch


def _silhouette_from_sums(sums, counts, own, valid) -> torch.Tensor:
    """Mean silhouette from per-point distance sums to each cluster.

    sums (..., M, K) sum of distances from each scored point to the members of each cluster (itself
    included, at distance 0), counts (..., K) cluster sizes, own (..., M) the point's cluster,
    valid (..., M) which scored points exist. -> (...,) mean silhouette, -1 with < 2 non-empty clusters."""
    cnt = counts[..., None, :].expand_as(sums)
    own_cnt = torch.gather(cnt, -1, own[..., None])[..., 0]
    a = torch.gather(sums, -1, own[..., None])[..., 0] / (own_cnt - 1).clamp_min(1)
    other = torch.where((cnt > 0) & (torch.arange(sums.shape[-1]) != own[..., None]), sums / cnt.clamp_min(1),
                        torch.tensor(float("inf"), dtype=sums.dtype))
    b = other.min(-1).values
    s = torch.where(own_cnt > 1, (b - a) / torch.maximum(a, b).clamp_min(1e-300), torch.zeros_like(a))
    s = torch.where(torch.isfinite(b), s, torch.zeros_like(s))
    v = valid.to(s.dtype)
    score = (s * v).sum(-1) / v.sum(-1).clamp_min(1)
    enough = (counts > 0).sum(-1) >= 2
    return torch.where(enough, score, torch.full_like(score, -1.0))


def _cluster_sums(x: torch.Tensor, oh: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Each point's summed Euclidean distances to the points of each column of oh: x (P, N, d) centred,
    oh (P, N, C) -> (P, N, C) = dist(x, x) @ oh, a point's distance to itself 0. The distances and their
    sums are in the data's own precision (float32 embeddings stay float32, as in scikit-learn), `rows`
    points at a time: a (rows, N) block of distances is reused from the heap, where a whole (N, N) matrix
    would be fresh pages to fault in at every call (glibc maps a block above its threshold: 32 MiB at most,
    8 MiB in a regroup worker; docs/benchmarks.md, fifth step). Centred data keeps the cancellation error
    of |a|^2 + |b|^2 - 2ab small."""
    p, n, _ = x.shape
    sq = (x * x).sum(-1)  # (P, N)
    xt = x.transpose(-1, -2)
    out = torch.empty(p, n, oh.shape[-1], dtype=x.dtype)
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        d = torch.matmul(x[:, lo:hi], xt).mul_(-2.0).add_(sq[:, lo:hi, None]).add_(sq[:, None, :])
        d.clamp_min_(0.0).sqrt_()
        d.diagonal(offset=lo, dim1=-2, dim2=-1).zero_()  # entries (i, lo + i)
        out[:, lo:hi] = torch.bmm(d, oh)
    return out


def _onehot(labels, k, mask, dtype):
    return torch.nn.functional.one_hot(labels, k).to(dtype) * mask[..., None].to(dtype)


def silhouette_exact(x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Exact mean silhouette of Q labelings per product. x (P,N,d), mask (P,N), labels (P,Q,N) -> (P,Q)."""
    m = mask[..., None].to(x.dtype)
    xd = x * m
    xd = xd - (xd.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)) * m  # centre on valid points
    p, q, n = labels.shape
    oh = _onehot(labels, k, mask[:, None, :], x.dtype)  # (P, Q, N, K)
    # the sums of every labeling's clusters at once, (N, N) x (N, Q K) per product, in the data's precision
    # (float32 sums of <= exact_max terms: within 1e-8 of float64 ones on the mean silhouette, and the cast of
    # N x N distances to float64 was most of the time); what follows in float64
    sums = _cluster_sums(xd, oh.permute(0, 2, 1, 3).reshape(p, n, q * k)).view(p, n, q, k).permute(0, 2, 1, 3)
    return _silhouette_from_sums(sums.to(torch.float64), oh.sum(2).to(torch.float64), labels,
                                 mask[:, None, :].expand_as(labels))


def silhouette_one(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Exact mean silhouette of Q labelings of one product, no padding. x (N,d), labels (Q,N) -> (Q,)."""
    return silhouette_exact(x[None], torch.ones(1, len(x), dtype=torch.bool), labels[None], k)[0]


def silhouette_sampled(x: torch.Tensor, labels: torch.Tensor, k: int, anchors: torch.Tensor,
                       chunk: int = 8192) -> torch.Tensor:
    """Silhouette of one product's Q labelings, exact for the anchor points, averaged. x (N,d), labels (Q,N).

    Distances from the anchors to the users are computed `chunk` users at a time, in the data's own
    precision, and their per-cluster sums accumulate in float64: memory is M x chunk whatever N is."""
    mu = x.mean(0, keepdim=True)
    a = x[anchors] - mu
    a2 = (a * a).sum(-1)[:, None]
    rows = torch.arange(len(anchors))
    sums = torch.zeros(labels.shape[0], len(anchors), k, dtype=torch.float64)
    counts = torch.zeros(labels.shape[0], k, dtype=torch.float64)
    for lo in range(0, len(x), chunk):
        b = x[lo:lo + chunk] - mu
        dist = (a2 + (b * b).sum(-1)[None, :] - 2.0 * a @ b.T).clamp_min_(0.0).sqrt_()  # (M, c)
        inside = (anchors >= lo) & (anchors < lo + len(b))
        dist[rows[inside], anchors[inside] - lo] = 0.0  # an anchor's distance to itself
        oh = torch.nn.functional.one_hot(labels[:, lo:lo + chunk], k).to(dist.dtype)  # (Q, c, K)
        sums += torch.einsum("mj,qjk->qmk", dist, oh).to(torch.float64)
        counts += oh.sum(1).to(torch.float64)
    own = labels[:, anchors]
    return _silhouette_from_sums(sums, counts, own, torch.ones_like(own, dtype=torch.bool))


def silhouette(x: np.ndarray, labels: np.ndarray, sample_size: int | None = None, seed: int = 0) -> float:
    """Mean silhouette of one labeling: exact, or that of `sample_size` users drawn with `seed`, among
    themselves (the estimate the clustering uses above exact_max)."""
    xt, lt = torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    k = int(lt.max()) + 1
    if sample_size is not None and sample_size < len(xt):
        sample = torch.from_numpy(np.random.default_rng(seed).choice(len(xt), sample_size, replace=False))
        xt, lt = xt[sample], lt[sample]
    return float(silhouette_one(xt, lt[None], k)[0])
