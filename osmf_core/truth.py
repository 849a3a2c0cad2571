"""The oracle of the simulated world: what only the simulator knows.

Evaluation code (oracle AUROC, segment recovery, simulated online CTR of generated creatives) calls
this module; model training never does.
"""
from __future__ import annotations

import numpy as np

from osmf_core import world
from osmf_core.world import CATEGORY_NAMES, DIMS, STYLE_DIMS, ProductTable, WorldSpec


class Truth:
    """Hidden ground truth of the world simulated with `seed` and `n_products` products."""

    def __init__(self, seed: int, n_products: int):
        self.seed = seed
        self.spec = WorldSpec.from_seed(seed)
        self.products = ProductTable.build(seed, n_products)

    @classmethod
    def from_warehouse(cls, warehouse: str) -> "Truth":
        from osmf_core.simulate import read_manifest
        seed, size = read_manifest(warehouse)
        return cls(seed, size.products)

    # ------------------------------------------------------------------ segments
    @staticmethod
    def category_code(category) -> int:
        return CATEGORY_NAMES.index(category) if isinstance(category, str) else int(category)

    def segment(self, category, users) -> np.ndarray:
        """True segment of every user (rows of a users table) for a category (name or code)."""
        n = len(np.asarray(users["user_id"]))
        cat = np.full(n, self.category_code(category))
        return world.segment_of(cat, _arrays(users))

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

    def creative_style(self, creative_ids) -> np.ndarray:
        return self.products.creative_style(np.asarray(creative_ids))

    def expected_ctr(self, style_or_prompt, product_id: int, users) -> float:
        """Mean p(click) over `users` of a creative of `product_id` with a style (codes) or prompt text.

        Style dimensions a prompt does not name count as the segment's average taste.
        """
        style = world.parse_style(style_or_prompt) if isinstance(style_or_prompt, str) \
            else np.asarray(style_or_prompt)
        u = _arrays(users)
        n = len(u["user_id"])
        cat = np.full(n, self.products.category[product_id])
        p = world.click_probability(self.spec, u, cat, np.full(n, self.products.bias[product_id]),
                                    np.broadcast_to(style, (n, len(DIMS))))
        return float(p.mean()) if n else float("nan")

    @staticmethod
    def style_words(style) -> dict:
        return {d: (STYLE_DIMS[d][int(v)] if v >= 0 else None) for d, v in zip(DIMS, style)}


def _arrays(users) -> dict:
    """Columns of a pandas DataFrame or a dict of arrays, as numpy arrays."""
    return {k: np.asarray(users[k]) for k in ["user_id", *world.ATTRS]}
