"""The clustering core of the nightly regroup: silhouette, batched K-Means with K*, group features."""
import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score

from osmf_core.grouping.kmeans import ClusterConfig, cluster_products
from osmf_core.grouping.group_features import STEP, group_points, mean_rows, merge_small, nearest_first
from osmf_core.grouping.silhouette import silhouette, silhouette_sampled


def _blobs(n, k, seed, d=8, std=1.0):
    x, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=std, center_box=(-10, 10), random_state=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("k", [2, 3, 7])
def test_silhouette_equals_scikit_learn(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(300, 16)) * 5 + 100  # far from the origin: cancellation would show here
    labels = rng.integers(0, k, 300)
    labels[:2] = [0, 1]
    labels[2] = k - 1 if k > 2 else labels[2]
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels), abs=1e-6)


def test_silhouette_of_clusters_with_a_singleton_equals_scikit_learn():
    x, _ = _blobs(60, 3, seed=1)
    labels = np.r_[np.zeros(30, int), np.ones(29, int), 2]  # cluster 2 holds one point: s = 0 there
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels), abs=1e-6)


def test_padded_float32_silhouettes_summed_in_blocks_equal_scikit_learns_in_float64():
    """The distances and their per-cluster sums are float32, 256 rows at a time: products of 700 and 530
    users (blocks that end inside a product, padding after the smaller one), far from the origin."""
    import torch
    from osmf_core.grouping.silhouette import silhouette_exact
    rng = np.random.default_rng(5)
    xs = [(rng.normal(size=(n, 12)) * 3 + 50).astype(np.float32) for n in (700, 530)]
    labels = [rng.integers(0, k, len(x)) for x, k in zip(xs, (4, 3))]
    x = torch.zeros(2, 700, 12)
    mask = torch.zeros(2, 700, dtype=torch.bool)
    lab = torch.zeros(2, 1, 700, dtype=torch.long)
    for i, (a, y) in enumerate(zip(xs, labels)):
        x[i, :len(a)], mask[i, :len(a)], lab[i, 0, :len(a)] = torch.from_numpy(a), True, torch.from_numpy(y)
    got = silhouette_exact(x, mask, lab, 4)[:, 0].tolist()
    want = [silhouette_score(a.astype(np.float64), y) for a, y in zip(xs, labels)]
    assert got == pytest.approx(want, abs=1e-6)
    assert abs(want[0] - want[1]) > 1e-4  # two different values, each matched


def test_batched_silhouettes_of_many_products_equal_scikit_learn():
    xs = [_blobs(int(n), int(k), seed=i)[0] for i, (n, k) in enumerate([(40, 2), (300, 4), (97, 3), (12, 2), (250, 5)])]
    for x, r in zip(xs, cluster_products(xs, ClusterConfig(seed=3))):
        assert r.silhouette == pytest.approx(silhouette_score(x.astype(np.float64), r.labels), abs=1e-6)
        assert r.labels.min() == 0 and r.labels.max() == r.k_star - 1 and len(r.labels) == len(x)
        assert r.silhouettes[r.k_star] == pytest.approx(r.silhouette) and r.silhouette == max(r.silhouettes.values())


def test_k_star_recovers_the_number_of_well_separated_clusters():
    truth = [2, 3, 4, 5] * 5
    data = [_blobs(int(n), k, seed=i, std=0.5) for i, (n, k) in enumerate(zip(np.linspace(30, 900, len(truth)), truth))]
    results = cluster_products([x for x, _ in data], ClusterConfig(seed=0))
    assert [r.k_star for r in results] == truth
    assert min(adjusted_rand_score(y, r.labels) for (_, y), r in zip(data, results)) > 0.99


def test_large_products_use_a_sampled_silhouette_close_to_the_exact_one():
    x, y = _blobs(4000, 4, seed=5, std=2.5)
    cfg = ClusterConfig(exact_max=500, sample_size=800, fit_max=1500, seed=0)
    (r,) = cluster_products([x], cfg)
    assert r.sampled and r.fit_on == 1500 and r.k_star == 4
    assert adjusted_rand_score(y, r.labels) > 0.95
    assert abs(r.silhouette - silhouette_score(x, r.labels)) < 0.02


def test_restarts_seeded_on_a_sample_find_what_restarts_on_every_user_find():
    """Above exact_max the restarts are seeded and pruned on `seed_max` users and only the best of each K
    runs on all of them: on separated groups the same K*, partition and (nearly) silhouette as seeding on
    every user, and every user still gets a label."""
    for seed, k in ((6, 5), (1, 3)):
        x, y = _blobs(6000, k, seed=seed, std=1.0)
        base = dict(exact_max=500, sample_size=600, seed=0)
        (sampled,) = cluster_products([x], ClusterConfig(seed_max=400, **base))
        (every,) = cluster_products([x], ClusterConfig(seed_max=20_000, **base))
        assert sampled.k_star == every.k_star == k and len(sampled.labels) == len(x)
        assert adjusted_rand_score(every.labels, sampled.labels) > 0.99 and adjusted_rand_score(y, sampled.labels) > 0.95
        assert sampled.silhouette == pytest.approx(every.silhouette, abs=1e-3)  # the same silhouette sample
    with pytest.raises(ValueError, match="seed_max"):
        ClusterConfig(seed_max=5)


def test_pruned_restarts_find_what_every_restart_to_convergence_finds():
    """Only the best restart of each K goes on after `prune_after` iterations: on separated groups that
    gives the same K*, the same partition and (nearly) the same silhouette as no pruning, for large
    products (sampled silhouette) and for small ones batched together (exact)."""
    for seed, k in ((1, 3), (4, 5)):
        x, y = _blobs(2500, k, seed=seed, std=1.5)
        base = dict(exact_max=500, sample_size=600, fit_max=2500, seed=0)
        (pruned,) = cluster_products([x], ClusterConfig(prune_after=3, **base))
        (full,) = cluster_products([x], ClusterConfig(prune_after=0, **base))
        assert pruned.k_star == full.k_star == k
        assert adjusted_rand_score(full.labels, pruned.labels) > 0.99
        assert pruned.silhouette == pytest.approx(full.silhouette, abs=1e-3)
    data = [_blobs(n, k, seed=n, std=0.5) for n, k in ((40, 2), (45, 3), (300, 4), (320, 5))]
    pruned = cluster_products([x for x, _ in data], ClusterConfig(prune_after=2, seed=0))
    full = cluster_products([x for x, _ in data], ClusterConfig(prune_after=0, seed=0))
    assert [r.k_star for r in pruned] == [r.k_star for r in full] == [2, 3, 4, 5]
    assert all(adjusted_rand_score(f.labels, p.labels) > 0.99 for f, p in zip(full, pruned))
    with pytest.raises(ValueError, match="prune_after"):
        ClusterConfig(prune_after=-1)


def test_sampled_silhouette_is_scikit_learns_on_the_same_sample():
    x, _ = _blobs(900, 3, seed=6, std=2.0)
    labels = np.random.default_rng(1).integers(0, 3, 900)
    rows = np.random.default_rng(7).choice(900, 300, replace=False)  # the draw silhouette() makes with seed 7
    assert silhouette(x, labels, sample_size=300, seed=7) == pytest.approx(
        silhouette_score(x[rows].astype(np.float64), labels[rows]), abs=1e-6)
    assert silhouette(x, labels, sample_size=900) == pytest.approx(silhouette_score(x.astype(np.float64), labels), abs=1e-6)


def test_anchor_silhouette_over_every_user_in_chunks_equals_scikit_learn():
    """With every user as an anchor the sampled silhouette is the exact one, whatever the chunk size
    (distances in float32, sums in float64)."""
    import torch
    x, _ = _blobs(500, 3, seed=4, std=2.0)
    labels = np.random.default_rng(0).integers(0, 3, 500)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)[None]
    for chunk in (7, 64, 500, 4096):
        got = float(silhouette_sampled(xt, lt, 3, torch.arange(500), chunk=chunk)[0])
        assert got == pytest.approx(silhouette_score(x.astype(np.float64), labels), abs=1e-5), chunk


def test_products_of_very_different_sizes_are_batched_with_little_padding():
    xs = [_blobs(n, 2, seed=n, std=0.5)[0] for n in (12, 13, 14, 40, 41, 200)]
    calls = []
    import osmf_core.grouping.kmeans as G
    real = G._cluster_padded
    try:
        G._cluster_padded = lambda batch, cfg, gen: calls.append([len(b) for b in batch]) or real(batch, cfg, gen)
        results = cluster_products(xs, ClusterConfig(seed=0))
    finally:
        G._cluster_padded = real
    assert calls == [[12, 13, 14], [40, 41], [200]]  # sizes within pad_ratio (1.25) share a batch
    assert [r.k_star for r in results] == [2] * 6


def test_too_few_users_is_a_clear_error():
    with pytest.raises(ValueError, match="more than k_max"):
        cluster_products([np.zeros((5, 3), np.float32)])
    with pytest.raises(ValueError, match="k_min"):
        ClusterConfig(k_min=1)


def test_small_groups_are_merged_into_the_nearest_group():
    x = np.r_[np.zeros((50, 2)), np.full((40, 2), 10.0), np.full((5, 2), 9.0)].astype(np.float32)
    labels = np.r_[np.zeros(50, int), np.ones(40, int), np.full(5, 2)]
    merged, cents, merges = merge_small(x, labels, min_size=10)
    assert merges == 1 and (merged[-5:] == 1).all() and (merged[:50] == 0).all()
    np.testing.assert_allclose(cents[1], x[50:].mean(0), rtol=1e-6)
    assert merge_small(x, np.zeros(95, int), min_size=200)[2] == 0  # one group stays one group


def test_group_points_are_means_of_k_users_at_the_percentile_distances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    c = x.mean(0)
    pts = group_points(x, c, percentiles=(15, 15, 95), point_users=7)
    dist = np.linalg.norm(x - c, axis=1)
    for point, p, block in zip(pts, (15, 15, 95), (0, 1, 0)):
        nearest = np.argsort(np.abs(dist - np.percentile(dist, p)), kind="stable")[block * 7:(block + 1) * 7]
        np.testing.assert_allclose(point, x[nearest].mean(0), rtol=1e-5)
        assert not any(np.allclose(point, row) for row in x)  # no single user's embedding is published
    assert not np.allclose(pts[0], pts[1])  # the repeat of a percentile is another point
    with pytest.raises(ValueError, match="cannot publish"):
        group_points(x[:5], c, point_users=7)


def test_the_k_nearest_are_the_stable_sorts_first_k_ties_included():
    """group_points takes a percentile's nearest members from a partition, not a sort of all of them: the
    same rows in the same order as the stable sort's first k, ties broken by row number."""
    a = np.array([3.0, 1.0, 2.0, 1.0, 0.5, 2.0, 2.0, 9.0, 1.0])
    assert nearest_first(a, 4).tolist() == [4, 1, 3, 8]  # the three 1.0s by row number
    assert nearest_first(a, 5).tolist() == [4, 1, 3, 8, 2]  # the k-th is the first of three 2.0s
    assert nearest_first(a, 9).tolist() == nearest_first(a, 20).tolist() == np.argsort(a, kind="stable").tolist()
    rng = np.random.default_rng(5)
    for _ in range(50):
        b = rng.integers(0, 30, rng.integers(1, 400)).astype(np.float32)  # many ties
        k = int(rng.integers(1, len(b) + 1))
        assert np.array_equal(nearest_first(b, k), np.argsort(b, kind="stable")[:k])


def test_a_groups_centroid_and_points_from_its_row_numbers_equal_those_of_its_copy_and_copy_nothing():
    """The regroup's group features take a group's members by row number (mean_rows, group_points(rows=)):
    the same numbers bit for bit as from the copy x[rows], with at most STEP members' rows at a time."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(10 * STEP + 17, 64)) * 4 + 2).astype(np.float32)
    step_bytes = STEP * x.shape[1] * 4  # one step of rows
    labels = rng.integers(0, 2, len(x))
    for g in (0, 1):
        rows = np.flatnonzero(labels == g)
        members = x[rows]
        assert len(rows) > 4.5 * STEP  # several steps, the last one partial
        centroid = mean_rows(x, rows)
        assert centroid.dtype == np.float32 and np.array_equal(centroid, members.mean(0))
        np.testing.assert_array_equal(group_points(x, centroid, rows=rows), group_points(members, centroid))
        tracemalloc.start()
        mean_rows(x, rows)
        group_points(x, centroid, rows=rows)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 * step_bytes < members.nbytes  # bounded by the step; x[rows] and x - centroid: 2x members
    one = x[:, :1] * 1000  # one column: numpy sums it pairwise, and mean_rows copies
    assert np.array_equal(mean_rows(one, rows), one[rows].mean(0))


def test_seeding_draws_in_proportion_to_the_weights_and_never_a_zero_weight():
    import torch

    from osmf_core.grouping.kmeans import _draw
    w = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0], [1e-12, 0.0, 0.0, 0.0, 0.0]])
    idx = _draw(w.repeat(20_000, 1), torch.Generator().manual_seed(0)).view(20_000, 3)
    assert torch.bincount(idx[:, 0], minlength=5)[[0, 2, 4]].sum() == 0
    assert (idx[:, 0] == 3).float().mean() == pytest.approx(0.75, abs=0.015)
    assert (idx[:, 1] == 4).all() and (idx[:, 2] == 0).all()


def test_nearest_slot_is_the_first_minimum_even_on_ties():
    import torch

    from osmf_core.grouping.kmeans import _nearest
    score = torch.randn(3, 4, 5, 50)
    score[:, :, 3] = score[:, :, 1]  # slot 3 ties slot 1 everywhere: slot 1 wins
    score[0, 0, :, 0] = 0.0  # all slots tie: slot 0 wins
    want = torch.nn.functional.one_hot(score.argmin(2), 5).permute(0, 1, 3, 2).bool()
    got = _nearest(score)
    assert torch.equal(got, want) and (got.sum(2) == 1).all() and not got[:, :, 3].any()


def test_lloyd_on_a_product_padded_with_masked_users_equals_lloyd_on_the_product_alone():
    """Padded users (mask False) count for no centroid: the same labels, centroids and inertia as the
    product alone, whose users are all valid (there the one-hots skip the mask)."""
    import torch

    from osmf_core.grouping.kmeans import _labelings, _lloyd
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 3, generator=gen) + 4 * i for i in range(3)])[None]  # (1, 120, 3)
    pad = torch.cat([x, torch.full((1, 9, 3), 50.0)], 1)  # 9 far-away padded users
    mask = torch.ones(1, 129, dtype=torch.bool)
    mask[0, 120:] = False
    cfg = ClusterConfig(k_min=2, k_max=4, restarts=2)
    kvalid = _labelings(cfg)
    seeds = x[:, torch.randperm(120, generator=gen)[:4]][:, None].expand(1, len(kvalid), 4, 3)
    lab, cen, inertia = _lloyd(x, torch.ones(1, 120, dtype=torch.bool), seeds, kvalid, 30, 1e-6)
    lab_p, cen_p, inertia_p = _lloyd(pad, mask, seeds, kvalid, 30, 1e-6)
    assert torch.equal(lab, lab_p[..., :120]) and torch.allclose(cen, cen_p) and torch.allclose(inertia, inertia_p)
    assert [len(torch.unique(lab[0, i])) for i in (0, -1)] == [2, 4]  # each labeling uses its K centroids


def test_every_k_is_seeded_with_the_first_k_centres_of_one_k_means_plus_plus_sequence():
    import torch

    from osmf_core.grouping.kmeans import _kmeanspp, _labelings
    cfg = ClusterConfig(restarts=3)
    x = torch.from_numpy(_blobs(40, 4, seed=3)[0])[None]
    kvalid = _labelings(cfg)
    cents = _kmeanspp(x, torch.ones(1, 40, dtype=torch.bool), kvalid, torch.Generator().manual_seed(0), 3)
    assert cents.shape == (1, len(cfg.ks) * 3, cfg.k_max, 8)
    per_k = cents[0].view(len(cfg.ks), 3, cfg.k_max, 8)
    assert all(torch.equal(per_k[i], per_k[0]) for i in range(len(cfg.ks)))  # the same sequences for every K
    assert len({tuple(per_k[0, r].flatten().tolist()) for r in range(3)}) == 3  # the restarts' sequences differ
    rows = {tuple(r.tolist()) for r in x[0]}
    assert all(tuple(c.tolist()) in rows for c in per_k[0].reshape(-1, 8))  # every seed is a user


_HEAP_SCRIPT = """
import sys, numpy as np
from osmf_core.grouping.heap import heap_threshold
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
print(heap_threshold(int(sys.argv[1])))
start, keep = rss(), []
for i in range(12):  # large arrays freed, each with a small object kept after it (a call's leftovers)
    big = np.ones(3 << 20, np.float32)  # 12 MiB, filled
    keep.append(np.ones(512, np.float32) + i)
    big = None
print(rss() - start)
"""


_TRIM_SCRIPT = """
import ctypes, sys
from osmf_core.grouping.heap import heap_threshold, trimmed
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
heap_threshold(8)  # as a regroup worker: blocks under 8 MiB come from the heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
start, keep = rss(), []
for i in range(128):  # a call's temporaries (written, then freed), each with a block kept after it
    n = (1 << 20) + i * 4096
    tmp = libc.malloc(n)
    ctypes.memset(tmp, 1, n)
    keep.append(libc.malloc(2 << 20))  # kept, never written, and larger than any hole: carved after tmp
    libc.free(tmp)
held = rss() - start
print(held, trimmed("out", sys.argv[1] == "trim"), rss() - start)
"""


@pytest.mark.parametrize("trim", [False, True])
def test_a_worker_gives_back_the_heap_pages_its_calls_freed_when_asked(tmp_path, trim):
    """Blocks under the mmap threshold are carved from the heap, and blocks kept after them pin it: 128
    freed temporaries of about 1 MiB stay resident. trimmed(out, True) (--trim-heap, after each call)
    gives their pages back and returns the call's result."""
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "trim.py"
    script.write_text(_TRIM_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, str(script), "trim" if trim else "keep"], capture_output=True, text=True,
                         check=True, cwd=root, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}).stdout.split()
    held, result, after = int(out[0]), out[1], int(out[2])
    assert held >= 128 and result == "out"  # MiB: the freed temporaries' pages, resident
    assert after < 8 if trim else after >= 128


def test_a_worker_with_the_heap_threshold_gives_back_the_large_arrays_it_freed(tmp_path):
    """glibc's own threshold slides up to the largest block freed, so after the first 12 MiB array the next
    ones come from the heap, and the small blocks kept after them pin it: the process keeps what it freed.
    With heap_threshold(8) every 12 MiB array is mapped alone and given back when freed."""
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "heap.py"
    script.write_text(_HEAP_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])

    def run(mib):
        out = subprocess.run([sys.executable, str(script), str(mib)], capture_output=True, text=True, check=True,
                             cwd=root, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}).stdout.split()
        return out[0] == "True", int(out[1])
    set_, kept = run(8)
    if not set_:
        pytest.skip("no glibc mallopt here")
    assert kept < 2  # MiB still held after twelve 12 MiB arrays were freed
    set_, kept = run(0)
    assert not set_ and kept >= 12  # glibc's default: a freed 12 MiB array stays in the heap
