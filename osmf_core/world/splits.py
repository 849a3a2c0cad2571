"""The v2 world's drawn parts: which attributes split each category into segments (drawn per seed, some
jointly on two attributes), each user's own taste around their segment's, and heavy-tailed popularity.

A split is a lookup table: `table[code_a, code_b]` is the segment of a user with codes (a, b) of the split's
attributes (b absent: a table of one column). Bins of an ordered attribute are contiguous code ranges; the
codes of a nominal one (colour, profession, OS, social group) are assigned freely. Every segment holds at
least `MIN_SHARE` of a reference sample of users, so each is a real audience.
"""
from __future__ import annotations

import numpy as np

from osmf_core.world.styles import DIM_SIZES

NOMINAL = {"color", "profession", "os_plant", "target_group"}
MIN_SHARE = 0.1  # the smallest segment's share of the users
JOINT_SHARE = 0.3  # probability that a category splits on two attributes jointly
TRIES, BIN_TRIES = 200, 30


def _bins(rng, n_codes: int, n_bins: int, nominal: bool) -> np.ndarray:
    """A map of codes -> bins, every bin used."""
    if nominal:
        while True:
            b = rng.integers(0, n_bins, n_codes)
            if len(np.unique(b)) == n_bins:
                return b
    cuts = np.sort(rng.choice(np.arange(1, n_codes), n_bins - 1, replace=False))
    return np.searchsorted(cuts, np.arange(n_codes), side="right")


def _one_split(rng, names: tuple[str, ...], card: dict, users: dict) -> tuple[tuple[str, ...], np.ndarray] | None:
    """One drawn split of `names` whose segments all hold MIN_SHARE of `users`, or None if this draw found none."""
    joint = len(names) == 2
    n_seg = int(rng.integers(2, 5))  # 2, 3 or 4 segments
    if not joint:
        n_seg = min(n_seg, card[names[0]])
        table = _bins(rng, card[names[0]], n_seg, names[0] in NOMINAL)[:, None]
    else:  # two bins per attribute, the four cells mapped onto the segments, depending on both attributes
        a = _bins(rng, card[names[0]], 2, names[0] in NOMINAL)
        b = _bins(rng, card[names[1]], 2, names[1] in NOMINAL)
        cells = rng.permutation(np.r_[np.arange(n_seg), rng.integers(0, n_seg, 4 - n_seg)]).reshape(2, 2)
        if (cells[0] == cells[1]).all() or (cells[:, 0] == cells[:, 1]).all():
            return None  # a function of one attribute alone: not a joint split
        table = cells[a[:, None], b[None, :]]
    seg = segment_by_table(table, *(users[n] for n in names))
    share = np.bincount(seg, minlength=n_seg) / len(seg)
    return (names, table) if share.min() >= MIN_SHARE else None


def draw_splits(seed: int, n_categories: int, card: dict, users: dict) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Per category, (the splitting attributes, the segment table), drawn from `seed`; `users` is the reference
    sample the segment shares are measured on."""
    rng = np.random.default_rng([int(seed), 11])
    attrs = [a for a, n in card.items() if n >= 2]
    out = []
    for _ in range(n_categories):
        for _ in range(TRIES):  # the attributes first, then bins for them: every attribute equally likely
            names = tuple(rng.choice(attrs, 2 if rng.random() < JOINT_SHARE else 1, replace=False))
            split = next((s for _ in range(BIN_TRIES) if (s := _one_split(rng, names, card, users))), None)
            if split is not None:
                out.append(split)
                break
        else:
            raise RuntimeError("no split with segments of at least MIN_SHARE of the users was found")
    return out


def segment_by_table(table: np.ndarray, codes_a, codes_b=None) -> np.ndarray:
    a = np.asarray(codes_a, dtype=np.int64)
    b = np.zeros_like(a) if codes_b is None else np.asarray(codes_b, dtype=np.int64)
    return np.asarray(table)[a, b].astype(np.int64)


# ---------------------------------------------------------------- individual taste
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a counter-based hash, so a user's taste needs no state and no random stream."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def individual_taste(seed: int, user_id, category, term) -> np.ndarray:
    """A standard normal per (user, category, style term), the same every time it is asked for: the user's own
    deviation from their segment's taste for that term (term = offset of a style dimension + its value)."""
    with np.errstate(over="ignore"):
        key = (np.asarray(user_id, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
               + np.asarray(category, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
               + np.asarray(term, dtype=np.uint64) * np.uint64(0x8CB92BA72F3D8DD7)
               + np.uint64(int(seed) & 0xFFFFFFFF) * np.uint64(0xA24BAED4963EE407))
        h1 = _mix(key)
        h2 = _mix(key ^ np.uint64(0x5851F42D4C957F2D))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


TERM_OFFSET = np.r_[0, np.cumsum(DIM_SIZES)[:-1]]  # style term of (dimension j, value v): TERM_OFFSET[j] + v


def own_taste(seed: int, taste_noise: float, user_id, category, style) -> np.ndarray | float:
    """Each user's own deviation from their segment's taste for a style: `taste_noise` times a standard normal
    per style term, summed over the named dimensions (0 where a dimension is unspecified). A world without own
    taste adds 0 and needs no user ids."""
    if taste_noise == 0:
        return 0.0
    style = np.asarray(style)
    total = np.zeros(np.broadcast_shapes(np.shape(user_id), np.shape(category), style.shape[:-1]))
    for j in range(style.shape[-1]):
        v = style[..., j]
        z = individual_taste(seed, user_id, category, TERM_OFFSET[j] + np.maximum(v, 0))
        total = total + np.where(v >= 0, z, 0.0)
    return taste_noise * total


# ---------------------------------------------------------------- popularity
def popularity(seed: int, n_products: int, exponent: float) -> np.ndarray | None:
    """Each product's share of the impressions: Zipf-like with `exponent` over a seeded ranking of the
    products (None when uniform, exponent 0)."""
    if exponent <= 0:
        return None
    rank = np.random.default_rng([int(seed), 12]).permutation(n_products)
    w = 1.0 / (rank + 1.0) ** exponent
    return w / w.sum()
