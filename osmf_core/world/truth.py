"""The oracle of the simulated world: what only the simulator knows.

Evaluation code (oracle AUROC, segment recovery, simulated online CTR of generated creatives) calls
this module; model training never does.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from osmf_core.world import model as world
from osmf_core.world import splits
from osmf_core.world.model import CATEGORY_NAMES, ProductTable, WorldSize, WorldSpec
from osmf_core.world.params import WorldParams
from osmf_core.world.styles import DIM_SIZES, DIMS, STYLE_DIMS, parse_style

MANIFEST = "_truth/world.json"  # under the warehouse; read by osmf_core.world.truth only, never by models


def read_manifest(warehouse: str) -> tuple[int, WorldSize]:
    seed, size, _ = read_world(warehouse)
    return seed, size


def read_world(warehouse: str) -> tuple[int, WorldSize, WorldParams]:
    """The seed, sizes and params of the world last simulated into `warehouse`."""
    data = json.loads((Path(warehouse) / MANIFEST).read_text())
    known = {f.name for f in fields(WorldSize)}
    size = WorldSize(**{k: v for k, v in data["size"].items() if k in known})
    return int(data["seed"]), size, WorldParams.from_json(data.get("params"))


ORACLE_CANDIDATES = 32  # with individual taste, the oracle scores exactly this many styles (the best on average)


class Truth:
    """Hidden ground truth of the world simulated with `seed`, `n_products` products and `params`."""

    def __init__(self, seed: int, n_products: int, params: WorldParams | None = None):
        self.seed = seed
        self.params = params or WorldParams()
        self.spec = WorldSpec.from_seed(seed, self.params)
        self.products = ProductTable.build(seed, n_products, self.params)

    @classmethod
    def from_warehouse(cls, warehouse: str) -> "Truth":
        seed, size, params = read_world(warehouse)
        return cls(seed, size.products, params)

    # ------------------------------------------------------------------ segments
    @staticmethod
    def category_code(category) -> int:
        return CATEGORY_NAMES.index(category) if isinstance(category, str) else int(category)

    def segment(self, category, users) -> np.ndarray:
        """True segment of every user (rows of a users table) for a category (name or code)."""
        n = len(np.asarray(users["user_id"]))
        cat = np.full(n, self.category_code(category))
        return world.segment_of(self.spec, cat, _arrays(users))

    def n_segments(self, category) -> int:
        return int(self.spec.n_segments[self.category_code(category)])

    def best_style(self, category, segment: int) -> np.ndarray:
        """The style codes a segment clicks most (click logits are additive over style dimensions)."""
        c = self.category_code(category)
        return np.array([int(np.argmax(w[c, segment])) for w in self.spec.prefs])

    # ------------------------------------------------------------------ clicks
    def click_probability(self, users, creative_ids) -> np.ndarray:
        """p(click) of each (user row, creative) pair: `users` rows aligned with `creative_ids`."""
        creative_ids = np.asarray(creative_ids)
        pid = creative_ids // world.CREATIVE_STRIDE
        return world.click_probability(self.spec, _arrays(users), self.products.category[pid],
                                       self.products.bias[pid], self.products.creative_style(creative_ids))

    def rung_logits(self, users, creative_ids) -> dict[str, np.ndarray]:
        """The true click logit of each (user row, creative) pair restricted to what each PAAG rung can
        represent, the terms it cannot replaced by their mean (a two-way decomposition of the style term).

        The true logit is B(c) + P(u) + S(category, segment(u), style(c)): creative and product bias,
        the user's propensity, and the segment's taste for the style. With segment shares w_s measured on
        these rows and the product's creatives equally likely (as the simulator shows them):
          I          B(c) + S̄(c)                              S̄(c) = Σ_s w_s S(s, c)
          I+U        B(c) + S̄(c) + P(u)                       (I+U+T: the same; the title adds no term)
          I+U+T+UT   I+U + S_p(seg(u)) - Σ_s w_s S_p(s)        S_p(s) = mean of S(s, c') over the product's c'
          full       the true logit
        (full also adds the user's own taste, where the world has it.)
        The UT term is all a user × product interaction without the creative can hold in this world;
        "UT by category" keeps only its mean over the rows of each (category, segment), the part a model
        can learn from the category alone, without telling the products of a category apart.
        """
        u = _arrays(users)
        creative_ids = np.asarray(creative_ids)
        pid = creative_ids // world.CREATIVE_STRIDE
        cat = self.products.category[pid]
        seg = world.segment_of(self.spec, cat, u)
        n_seg = self.spec.n_segments
        shares = np.zeros((len(n_seg), int(n_seg.max())))  # w_s per category, from these rows
        np.add.at(shares, (cat, seg), 1.0)
        shares /= np.maximum(shares.sum(1, keepdims=True), 1.0)
        style = self.products.creative_style(creative_ids)
        # S of every row's creative for every segment of its category, and S_p: the mean over its product
        s_all = np.stack([self._utility(cat, s, style) for s in range(shares.shape[1])], axis=1)
        s_prod = np.zeros((len(self.products.category), shares.shape[1]))
        for p in np.unique(pid):
            k = int(self.products.n_creatives[p])
            styles = self.products.styles[p, :k].astype(np.int64)
            s_prod[p] = [self._utility(np.full(k, self.products.category[p]), s, styles).mean()
                         for s in range(shares.shape[1])]
        w = shares[cat]
        rows = np.arange(len(pid))
        s_bar = (w * s_all).sum(1)
        b = self.spec.base_logit + self.spec.category_bias[cat] + self.products.bias[pid] + s_bar
        i_u = b + world.user_propensity(u)
        ut = s_prod[pid, seg] - (w * s_prod[pid]).sum(1)
        cell = cat * shares.shape[1] + seg
        ut_sum, ut_n = np.zeros(shares.size), np.zeros(shares.size)
        np.add.at(ut_sum, cell, ut)
        np.add.at(ut_n, cell, 1.0)
        return {
            "I": b,
            "I+U": i_u,
            "I+U+T": i_u,
            "I+U+T+UT": i_u + ut,
            "full": i_u - s_bar + s_all[rows, seg] + splits.own_taste(
                self.seed, self.spec.taste_noise, u["user_id"], cat, style),
            "UT by category": i_u + (ut_sum / np.maximum(ut_n, 1.0))[cell],
        }

    def _utility(self, category: np.ndarray, segment: int, style: np.ndarray) -> np.ndarray:
        """S(category, segment, style) per row; 0 where the category has fewer segments."""
        valid = segment < self.spec.n_segments[category]
        seg = np.where(valid, segment, 0)
        return np.where(valid, world.style_utility(self.spec, category, seg, style), 0.0)

    def creative_style(self, creative_ids) -> np.ndarray:
        return self.products.creative_style(np.asarray(creative_ids))

    def expected_ctr(self, style_or_prompt, product_id: int, users) -> float:
        """Mean p(click) over `users` of a creative of `product_id` with a style (codes) or prompt text.

        Style dimensions a prompt does not name count as the segment's average taste.
        """
        style = parse_style(style_or_prompt) if isinstance(style_or_prompt, str) \
            else np.asarray(style_or_prompt)
        u = _arrays(users)
        n = len(u["user_id"])
        cat = np.full(n, self.products.category[product_id])
        p = world.click_probability(self.spec, u, cat, np.full(n, self.products.bias[product_id]),
                                    np.broadcast_to(style, (n, len(DIMS))))
        return float(p.mean()) if n else float("nan")

    def oracle_style(self, product_id: int, users, styles=None) -> tuple[np.ndarray, float]:
        """The style (all four dimensions named) with the highest expected CTR over `users` for a creative
        of `product_id`, and that CTR: an exhaustive search over the style vocabulary, or over `styles`
        ((n, n_dims) codes, e.g. the product's logged creatives) when given; ties go to the first. With users'
        own taste, the search ranks styles by the segments' taste and scores the best ORACLE_CANDIDATES exactly."""
        u = _arrays(users)
        if not len(u["user_id"]):
            raise ValueError("the oracle style of an empty audience is undefined")
        c = int(self.products.category[product_id])
        seg = world.segment_of(self.spec, np.full(len(u["user_id"]), c), u)
        base = (self.spec.base_logit + self.spec.category_bias[c] + self.products.bias[product_id]
                + world.user_propensity(u))
        if styles is None:
            grids = np.meshgrid(*[np.arange(n) for n in DIM_SIZES], indexing="ij")
            styles = np.stack([g.ravel() for g in grids], axis=1)  # (n_styles, n_dims)
        styles = np.asarray(styles, dtype=np.int64)
        if styles.ndim != 2 or not len(styles) or (styles < 0).any():
            raise ValueError("candidate styles must be a non-empty (n, n_dims) array with every dimension named")
        # users differ only by (segment, base logit) and their own taste: score each distinct (segment, base) once,
        # weighted by its count, without their own taste (its mean is 0)
        keys, count = np.unique(np.stack([seg, base]), axis=1, return_counts=True)
        seg_k, base_k = keys[0].astype(np.int64), keys[1]
        util = sum(w[c][seg_k][:, styles[:, j]] for j, w in enumerate(self.spec.prefs))  # (n_keys, n_styles)
        ctr = (world._sigmoid(base_k[:, None] + util) * count[:, None]).sum(axis=0) / count.sum()
        if self.spec.taste_noise:  # the best ORACLE_CANDIDATES of those, scored exactly with every user's own taste
            top = np.argsort(-ctr, kind="stable")[:ORACLE_CANDIDATES]
            styles, ctr = styles[top], np.array([self._exact_ctr(u, c, product_id, st) for st in styles[top]])
        best = int(np.argmax(ctr))
        return styles[best], float(ctr[best])

    def _exact_ctr(self, users: dict, category: int, product_id: int, style: np.ndarray) -> float:
        n = len(users["user_id"])
        return float(world.click_probability(self.spec, users, np.full(n, category), np.full(n, self.products.bias[product_id]),
                                             np.broadcast_to(style, (n, len(style)))).mean())

    def logged_styles(self, product_id: int) -> np.ndarray:
        """The styles of the product's logged creatives, (n_creatives, n_dims)."""
        return self.products.styles[product_id, :self.products.n_creatives[product_id]].astype(np.int64)

    @staticmethod
    def style_words(style) -> dict:
        return {d: (STYLE_DIMS[d][int(v)] if v >= 0 else None) for d, v in zip(DIMS, style)}


def _arrays(users) -> dict:
    """Columns of a pandas DataFrame or a dict of arrays, as numpy arrays."""
    return {k: np.asarray(users[k]) for k in ["user_id", *world.ATTRS]}
