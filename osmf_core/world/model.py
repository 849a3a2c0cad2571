"""The simulated ad world, as pure numpy: who the users are, what is sold, and why people click.

Everything is a deterministic function of a seed and a block index, so Spark tasks generate their
block without talking to each other and the same seed gives the same tables whatever the partitioning.

The hidden part (segment of a user for a category, style preferences of each segment, each user's own taste,
product biases and popularity) lives in `WorldSpec` and `ProductTable`; it is read only by the simulator and by
osmf_core.world.truth, never by the models. How it varies per seed: osmf_core.world.params (presets v2, v1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osmf_core.data.catalog import USER_ATTRIBUTES
from osmf_core.world import splits
from osmf_core.world.params import WorldParams
from osmf_core.world.styles import DIM_SIZES, DIMS

ATTRS = list(USER_ATTRIBUTES)
CARD = np.array([USER_ATTRIBUTES[a][0] for a in ATTRS])

# ---------------------------------------------------------------- categories and their hidden splits
# The v1 preset's fixed splits: each category splits its shoppers by one attribute; `bins` maps every code of
# that attribute to a segment. Different categories split along different attributes (paper, Figure 1). The
# v2 preset draws them per seed (osmf_core.world.splits).
CATEGORIES: dict[str, tuple[str, tuple[int, ...]]] = {
    "smartphone": ("gender", (0, 1)),
    "shoes": ("age", (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2)),
    "baby_care": ("child_age", (0, 1, 1, 1, 2, 2, 2, 2, 2, 2)),
    "furniture": ("marriage", (0, 0, 1)),
    "car_accessories": ("has_car", (0, 1)),
    "laptop": ("profession", (0, 1, 1, 2, 2, 2, 3, 3, 2, 1, 3)),
    "snacks": ("promotions_sensitive_level", (0, 0, 1, 2, 2)),
    "watches": ("purchase_power", (0, 0, 1, 1, 2, 2, 2)),
    "books": ("education", (0, 0, 1, 1, 2, 2)),
    "sportswear": ("user_active", (0, 1, 2)),
    "luggage": ("resident_city_level", (0, 0, 1, 1, 1)),
    "cosmetics": ("target_group", (0, 1, 2, 3, 3, 1, 3, 2)),
    "headphones": ("is_impulse_purchase_user", (0, 1)),
    "home_appliances": ("has_house", (0, 1)),
}
CATEGORY_NAMES = list(CATEGORIES)
for _cat, (_attr, _bins) in CATEGORIES.items():
    assert len(_bins) == USER_ATTRIBUTES[_attr][0], (_cat, _attr)

_NOUNS = {
    "smartphone": "Smartphone", "shoes": "Running Shoes", "baby_care": "Baby Lotion", "furniture": "Sofa",
    "car_accessories": "Car Phone Mount", "laptop": "Laptop", "snacks": "Snack Box", "watches": "Watch",
    "books": "Hardcover Book", "sportswear": "Sports Jacket", "luggage": "Suitcase",
    "cosmetics": "Lipstick", "headphones": "Wireless Headphones", "home_appliances": "Air Fryer",
}
_BRANDS = ("Nova", "Lumen", "Orbit", "Aster", "Kite", "Vela", "Pico", "Terra", "Zenit", "Mira")
_ADJS = ("Classic", "Pro", "Lite", "Ultra", "Mini", "Max", "Plus", "Air", "Prime", "Eco")


@dataclass(frozen=True)
class WorldSize:
    users: int = 60_000  # users in the world
    products: int = 280  # products (20 per category by default)
    impressions_per_user: float = 50.0  # mean impressions per user over the window
    days: int = 7  # length of the log window
    start_date: str = "2026-11-01"  # first event date
    image_size: int = 64  # side of product and creative images, pixels

    def __post_init__(self):
        for name in ("users", "products", "days", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.impressions_per_user <= 0:
            raise ValueError("impressions_per_user must be > 0")
        if self.image_size < 16:
            raise ValueError("image_size must be >= 16 pixels")


USER_BLOCK = 5_000  # users generated per block (a Spark task makes whole blocks)
PRODUCT_BLOCK = 1_000  # products per block
MAX_CREATIVES = 20  # creatives per product: 3..20
CREATIVE_STRIDE = 32  # creative_id = product_id * CREATIVE_STRIDE + index
IMPRESSION_STRIDE = 1 << 12  # impression_id = user_id * IMPRESSION_STRIDE + index (< 4096 per user)

_TAGS = {"spec": 1, "users": 2, "products": 3, "impressions": 4}


def rng_for(seed: int, tag: str, block: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _TAGS[tag], int(block)])


@dataclass(frozen=True)
class WorldSpec:
    """The hidden ground truth of one seeded world."""

    seed: int
    base_logit: float  # overall click propensity
    category_bias: np.ndarray  # (n_categories,)
    # style preference of every (category, segment): a list over DIMS of (n_cat, max_seg, dim_size)
    prefs: tuple
    favorite: np.ndarray  # (n_cat, max_seg, n_dims): each segment's favourite value per dimension
    n_segments: np.ndarray  # (n_cat,)
    split_attrs: tuple = ()  # per category, the attribute(s) its segments are defined by
    split_tables: tuple = ()  # per category, segment = table[code of attribute 1, code of attribute 2 or 0]
    taste_noise: float = 0.0  # std of each user's own taste per style term (logits)

    @staticmethod
    def from_seed(seed: int, params: WorldParams | None = None) -> "WorldSpec":
        params = params or WorldParams()
        rng = rng_for(seed, "spec")
        n_cat = len(CATEGORIES)
        if params.splits == "fixed":
            drawn = [((a,), np.asarray(bins)[:, None]) for a, bins in CATEGORIES.values()]
        else:
            drawn = splits.draw_splits(seed, n_cat, dict(zip(ATTRS, CARD.tolist())), sample_users(seed, 0, USER_BLOCK))
        n_seg = np.array([int(t.max()) + 1 for _, t in drawn])
        max_seg = int(n_seg.max())
        prefs, favorite = [], np.zeros((n_cat, max_seg, len(DIMS)), dtype=np.int64)
        for j, size in enumerate(DIM_SIZES):
            w = np.zeros((n_cat, max_seg, size))
            for c in range(n_cat):
                shared = rng.normal(0.0, 0.15, size)  # what the category's shoppers all like a bit
                favs = rng.choice(size, size=n_seg[c], replace=False)  # conflicting favourites
                for s in range(n_seg[c]):
                    w[c, s] = shared + rng.normal(0.0, 0.1, size)
                    w[c, s, favs[s]] += 0.9
                    for o in range(n_seg[c]):  # what other segments love, this one dislikes
                        if o != s:
                            w[c, s, favs[o]] -= 0.35
                    favorite[c, s, j] = favs[s]
            prefs.append(w * params.style_scale)
        return WorldSpec(
            seed=seed,
            base_logit=params.base_logit,
            category_bias=rng.normal(0.0, 0.2, n_cat),
            prefs=tuple(prefs),
            favorite=favorite,
            n_segments=n_seg,
            split_attrs=tuple(a for a, _ in drawn),
            split_tables=tuple(t for _, t in drawn),
            taste_noise=params.taste_noise,
        )

    def split_name(self, category: int) -> str:
        """The attribute(s) a category splits on, e.g. 'age' or 'gender x has_car'."""
        return " x ".join(self.split_attrs[category])


# ---------------------------------------------------------------- users
def _clip_round(x, lo, hi):
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def sample_users(seed: int, block: int, n_users: int) -> dict[str, np.ndarray]:
    """Users [block*USER_BLOCK, ...) as columns: user_id and the 20 attribute codes, correlated."""
    lo = block * USER_BLOCK
    n = max(0, min(USER_BLOCK, n_users - lo))
    rng = rng_for(seed, "users", block)
    u = lambda: rng.random(n)  # noqa: E731
    age = rng.choice(13, n, p=np.array([3, 6, 9, 11, 11, 12, 11, 10, 8, 7, 5, 4, 3]) / 100)
    gender = (u() < 0.5).astype(np.int64)
    married = u() < _sigmoid(0.9 * (age - 4.5))
    marriage = np.where(u() < 0.05, 0, np.where(married, 2, 1))
    has_child = married & (u() < 0.8) | (~married & (u() < 0.05))
    child_age = np.where(has_child, _clip_round(age - 3.5 + rng.normal(0, 1.2, n), 1, 9), 0)
    edu = _clip_round(np.where(age <= 1, 1.5, 3.0) + rng.normal(0, 1.1, n), 0, 5)
    city = rng.choice(5, n, p=[0.15, 0.2, 0.25, 0.2, 0.2])
    pp = _clip_round(3.0 + 0.55 * city - 0.5 * (edu - 2.5) - 0.4 * ((age >= 4) & (age <= 9)) +
                     rng.normal(0, 1.0, n), 0, 6)
    student = (age <= 2) & (u() < 0.7)
    retired = (age >= 11) & (u() < 0.7)
    prof = np.where(student, 0, np.where(retired, 10,
                    np.where(edu >= 4, rng.choice([1, 2, 3, 4, 5, 8, 9], n),
                             rng.choice([5, 6, 7, 8, 9, 6, 7], n))))
    has_house = (u() < _sigmoid(0.5 * (age - 5) - 0.45 * (pp - 3))).astype(np.int64)
    has_car = (u() < _sigmoid(-0.6 * (pp - 3) + 0.25 * (city - 2) - 0.4)).astype(np.int64)
    is_vip = (u() < _sigmoid(-0.8 * (pp - 2) - 1.2)).astype(np.int64)
    ios = u() < _sigmoid(-0.7 * (pp - 2.5) - 0.3)
    os_plant = np.where(ios, 1, rng.choice([0, 0, 0, 2, 2, 3], n))
    active = rng.choice(3, n, p=[0.3, 0.45, 0.25])
    points = _clip_round(1.5 * active + rng.normal(0.5, 0.9, n), 0, 4)
    member = _clip_round(active + 2 * is_vip + rng.normal(1.0, 1.0, n), 0, 6)
    orders = _clip_round(2 * active + 0.4 * (6 - pp) + rng.normal(0, 1.2, n), 0, 7)
    impulse = (u() < _sigmoid(-0.2 * (age - 4) - 0.5)).astype(np.int64)
    promo = _clip_round(0.6 * pp + rng.normal(0.3, 1.0, n), 0, 4)
    color_p = np.stack([np.r_[np.ones(5) * 3, np.ones(10)], np.r_[np.ones(5), np.ones(10) * 1.5]])
    color_p /= color_p.sum(1, keepdims=True)
    color = np.where(gender == 0, rng.choice(15, n, p=color_p[0]), rng.choice(15, n, p=color_p[1]))
    # target_group: 0 student, 1 young professional, 2 urban family, 3 rural family, 4 senior,
    # 5 white collar, 6 blue collar, 7 affluent
    tg = np.where(prof == 0, 0,
         np.where(age >= 10, 4,
         np.where(pp <= 1, 7,
         np.where(has_child & (city <= 2), 2,
         np.where(has_child, 3,
         np.where(age <= 4, 1,
         np.where(np.isin(prof, [1, 2, 3, 4, 5]), 5, 6)))))))
    cols = {
        "age": age, "color": color, "is_vip": is_vip, "os_plant": os_plant, "has_car": has_car,
        "gender": gender, "marriage": marriage, "child_age": child_age, "has_house": has_house,
        "profession": prof, "user_active": active, "education": edu, "target_group": tg,
        "member_level": member, "customer_points": points, "purchase_power": pp,
        "resident_city_level": city, "per_month_order_num": orders, "is_impulse_purchase_user": impulse,
        "promotions_sensitive_level": promo,
    }
    out = {"user_id": np.arange(lo, lo + n, dtype=np.int64)}
    out.update({a: cols[a].astype(np.int64) for a in ATTRS})
    return out


def n_user_blocks(n_users: int) -> int:
    return -(-n_users // USER_BLOCK)


# ---------------------------------------------------------------- products and creatives
def sample_products(seed: int, block: int, n_products: int) -> dict[str, np.ndarray]:
    """Products [block*PRODUCT_BLOCK, ...): category, title parts, colour, bias, creative styles."""
    lo = block * PRODUCT_BLOCK
    n = max(0, min(PRODUCT_BLOCK, n_products - lo))
    rng = rng_for(seed, "products", block)
    ids = np.arange(lo, lo + n, dtype=np.int64)
    category = ids % len(CATEGORIES)  # every category equally stocked
    n_creatives = np.minimum(2 + rng.geometric(1 / 2.75, n), MAX_CREATIVES)  # 3..20, mean about 4.75
    styles = np.stack([rng.integers(0, s, (n, MAX_CREATIVES)) for s in DIM_SIZES], axis=-1)
    return {
        "product_id": ids,
        "category": category,
        "brand": rng.integers(0, len(_BRANDS), n),
        "adj": rng.integers(0, len(_ADJS), n),
        "model": rng.integers(1, 100, n),
        "color": rng.integers(0, 15, n),
        "bias": rng.normal(0.0, 0.2, n),
        "n_creatives": n_creatives.astype(np.int64),
        "styles": styles.astype(np.int64),  # (n, MAX_CREATIVES, n_dims); only the first n_creatives exist
    }


def n_product_blocks(n_products: int) -> int:
    return -(-n_products // PRODUCT_BLOCK)


def product_title(category: int, brand: int, adj: int, model: int) -> str:
    cat = CATEGORY_NAMES[category]
    return f"{_BRANDS[brand]} {_ADJS[adj]} {_NOUNS[cat]} {model}"


@dataclass(frozen=True)
class ProductTable:
    """All products' hidden facts as flat arrays, indexed by product_id (small: broadcast to tasks)."""

    category: np.ndarray
    bias: np.ndarray
    n_creatives: np.ndarray
    styles: np.ndarray  # (n_products, MAX_CREATIVES, n_dims), int8
    popularity: np.ndarray | None = None  # each product's share of the impressions; None: uniform

    @staticmethod
    def build(seed: int, n_products: int, params: WorldParams | None = None) -> "ProductTable":
        params = params or WorldParams()
        parts = [sample_products(seed, b, n_products) for b in range(n_product_blocks(n_products))]
        cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
        return ProductTable(cat("category"), cat("bias"), cat("n_creatives"), cat("styles").astype(np.int8),
                            splits.popularity(seed, n_products, params.popularity))

    def creative_style(self, creative_id: np.ndarray) -> np.ndarray:
        pid, idx = np.divmod(np.asarray(creative_id), CREATIVE_STRIDE)
        return self.styles[pid, idx].astype(np.int64)


# ---------------------------------------------------------------- clicks
def segment_of(spec: WorldSpec, category: np.ndarray, users: dict[str, np.ndarray]) -> np.ndarray:
    """True segment of each user for the matching category (arrays of equal length)."""
    category = np.asarray(category)
    out = np.zeros(len(category), dtype=np.int64)
    for c, (attrs, table) in enumerate(zip(spec.split_attrs, spec.split_tables)):
        m = category == c
        if m.any():
            out[m] = splits.segment_by_table(table, *(np.asarray(users[a])[m] for a in attrs))
    return out


def user_propensity(users: dict[str, np.ndarray]) -> np.ndarray:
    """Style-independent click propensity of a user (activity and impulse buying)."""
    return np.array([-0.4, 0.0, 0.3])[np.asarray(users["user_active"])] + \
        0.25 * np.asarray(users["is_impulse_purchase_user"])


def style_utility(spec: WorldSpec, category, segment, style) -> np.ndarray:
    """Sum over style dimensions of the segment's preference; -1 (unspecified) counts as neutral."""
    category, segment, style = np.asarray(category), np.asarray(segment), np.asarray(style)
    total = np.zeros(np.broadcast_shapes(category.shape, segment.shape, style.shape[:-1]))
    for j, w in enumerate(spec.prefs):
        v = style[..., j]
        value = w[category, segment, np.maximum(v, 0)]
        neutral = w[category, segment].mean(axis=-1)
        total = total + np.where(v >= 0, value, neutral)
    return total


def click_logit(spec: WorldSpec, users: dict[str, np.ndarray], category, product_bias, style) -> np.ndarray:
    seg = segment_of(spec, category, users)
    return (spec.base_logit + spec.category_bias[np.asarray(category)] + np.asarray(product_bias)
            + user_propensity(users) + style_utility(spec, category, seg, style)
            + splits.own_taste(spec.seed, spec.taste_noise, users.get("user_id"), category, style))


def click_probability(spec: WorldSpec, users, category, product_bias, style) -> np.ndarray:
    return _sigmoid(click_logit(spec, users, category, product_bias, style))


# ---------------------------------------------------------------- impressions
def sample_impressions(seed: int, block: int, size: WorldSize, spec: WorldSpec,
                       products: ProductTable) -> dict[str, np.ndarray]:
    """Impressions of the users of one block: random product, random creative, click ~ p(user, creative)."""
    users = sample_users(seed, block, size.users)
    rng = rng_for(seed, "impressions", block)
    n_imp = np.minimum(rng.poisson(size.impressions_per_user, len(users["user_id"])), IMPRESSION_STRIDE - 1)
    row_user = np.repeat(np.arange(len(n_imp)), n_imp)
    index = np.arange(len(row_user)) - np.repeat(np.cumsum(n_imp) - n_imp, n_imp)
    n_products = len(products.category)
    product = rng.integers(0, n_products, len(row_user)) if products.popularity is None \
        else rng.choice(n_products, len(row_user), p=products.popularity)
    creative_idx = (rng.random(len(row_user)) * products.n_creatives[product]).astype(np.int64)
    creative_id = product * CREATIVE_STRIDE + creative_idx
    viewer = {a: users[a][row_user] for a in ["user_id", *ATTRS]}
    p = click_probability(spec, viewer, products.category[product], products.bias[product],
                          products.styles[product, creative_idx].astype(np.int64))
    clicked = (rng.random(len(row_user)) < p).astype(np.int64)
    day = rng.integers(0, size.days, len(row_user))
    user_id = users["user_id"][row_user]
    return {
        "day": day,
        "impression_id": user_id * IMPRESSION_STRIDE + index,
        "user_id": user_id,
        "creative_id": creative_id,
        "clicked": clicked,
    }
