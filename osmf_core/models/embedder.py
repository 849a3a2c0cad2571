"""PAAG as a service to the regroup: e_u|t of (user, product) rows, and each user's preference profile over
a product's creatives, from a trained model file and the warehouse's encoder features."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from osmf_core.data import catalog as C
from osmf_core.data.reader import FeatureBank, read_frame
from osmf_core.models.paag import load_model


class PAAGEmbedder:
    """e_u|t for (user, product) rows in batches, from a trained model and the title features; with
    `profiles`, also each user's preference profile over the product's creatives (see `profile`).

    Built once per process and called on batches of attribute codes. The regroup's Spark workers build it
    without features and put it over each call's own products' features (`with_bank`)."""

    def __init__(self, model_path: str | Path, warehouse: str | None, profiles: bool = False,
                 bank: FeatureBank | None = None):
        """Over the warehouse's whole feature bank, or over `bank`; with neither, the model alone, which
        `with_bank` puts over the bank of a few products (the regroup's calls: each brings its own)."""
        self.model, blob = load_model(model_path)
        self.encoders = (blob["text_encoder"], blob["image_encoder"] if profiles else None)
        self.profiles = profiles
        if profiles and self.model.cfg.rung != "full":
            raise ValueError(f"preference profiles need the full PAAG (e_u|c); {model_path} is rung "
                             f"{self.model.cfg.rung!r}")
        if bank is None and warehouse is not None:
            bank = FeatureBank.load(warehouse, *self.encoders)
        if bank is not None:
            self._use(bank, warehouse)

    def with_bank(self, bank: FeatureBank) -> "PAAGEmbedder":
        """The same model over another bank (one carrying each creative's product): shares the weights."""
        other = copy.copy(self)
        other._use(bank, None)
        return other

    def _use(self, bank: FeatureBank, warehouse: str | None) -> None:
        self.bank = bank
        with torch.no_grad():  # every product's title tokens, projected once (not once per row)
            self.tokens = self._tokens(self.model.title_tokens, bank.title, bank.projected)
        self.mask = torch.from_numpy(self.bank.title_mask)
        self.creatives: dict[int, np.ndarray] = {}
        self.width = 0
        if self.profiles:
            if bank.creative_products is not None:
                cr = pd.DataFrame({"creative_id": bank.creative_ids, "product_id": bank.creative_products})
            else:
                cr = read_frame(C.CREATIVES, warehouse, ["creative_id", "product_id"])
                cr = cr[np.isin(cr["creative_id"].to_numpy(), self.bank.creative_ids)].sort_values("creative_id")
            for pid, ids in cr.groupby("product_id")["creative_id"]:
                self.creatives[int(pid)] = np.searchsorted(self.bank.creative_ids, ids.to_numpy())
            self.width = max((len(v) for v in self.creatives.values()), default=0)
            with torch.no_grad():
                self.patches = self._tokens(self.model.patch_tokens, bank.patches, bank.projected)
            self.patch_mask = torch.from_numpy(self.bank.patch_mask)

    @staticmethod
    def _tokens(project, feats: np.ndarray, projected: bool) -> torch.Tensor | None:
        if not len(feats):
            return None
        return torch.from_numpy(feats) if projected else project(torch.from_numpy(feats))

    @torch.no_grad()
    def __call__(self, attrs: np.ndarray, product_ids: np.ndarray, batch_size: int = 2048,
                 shared_below: int = 16_384) -> np.ndarray:
        """attrs (B, 20) integer codes in catalog order, product_ids (B,) -> e_u|t (B, d) float32.
        Each product's title is folded into the attention once (CrossAttention.fold) for all its rows.
        e_u is computed once per distinct attribute row of the products with fewer than `shared_below`
        rows (a user who viewed several of a call's products is embedded once), and step by step for the
        rows of a larger product, whose users are all distinct: a call holds e_u of its small products'
        users, not of a large product's, and no int64 copy of `attrs` (docs/benchmarks.md, eleventh step).
        `batch_size` rows at a time: each step's temporaries stay near 2 MiB, reused from the heap
        (grouping.heap)."""
        attrs = np.asarray(attrs)
        out = np.zeros((len(product_ids), self.model.cfg.d), np.float32)
        if not len(out):
            return out
        spans = list(_spans(self.bank.title_rows(np.asarray(product_ids))))
        shared = [idx for _, idx in spans if len(idx) < shared_below]
        if shared:
            rows = np.concatenate(shared)
            distinct, inverse = distinct_rows(attrs[rows])
            eu = torch.empty(len(distinct), self.model.cfg.d)
            for lo in range(0, len(distinct), batch_size):
                eu[lo:lo + batch_size] = self._user_embedding(distinct[lo:lo + batch_size])
            slot = np.zeros(len(out), np.int64)  # each row's e_u among the distinct rows
            slot[rows] = inverse.reshape(-1)
        for r, idx in spans:
            folded = self.model.ca_title.fold(self.tokens[r], self.mask[r])
            for lo in range(0, len(idx), batch_size):
                take = idx[lo:lo + batch_size]
                e = self._user_embedding(attrs[take]) if len(idx) >= shared_below else eu[slot[take]]
                out[take] = self.model.ca_title.attend(e, folded).numpy()
        return out

    def _user_embedding(self, codes: np.ndarray) -> torch.Tensor:
        return self.model.user_embedding(torch.from_numpy(codes.astype(np.int64)))

    @torch.no_grad()
    def profile(self, eut: np.ndarray, product_ids: np.ndarray, pairs_per_call: int = 8192) -> np.ndarray:
        """The preference profile of each (user, product) row: the user branch of the click logit,
        h_u|c(e_u|c), for every creative of the product (in creative id order), minus its mean over those
        creatives, so it says which of the product's creatives the user prefers and not how much the user
        clicks overall. Zero-padded to `width` (the most creatives of any product): (B, width) float32.
        eut: the rows' e_u|t (from __call__); `pairs_per_call` (user, creative) pairs at a time (temporaries of
        a few MiB, as in __call__)."""
        if not self.creatives:
            raise ValueError("built without profiles=True")
        product_ids = np.asarray(product_ids)
        out = np.zeros((len(product_ids), self.width), np.float32)
        for pid, idx in _spans(product_ids):
            crs = self.creatives.get(int(pid))
            if crs is None:
                raise KeyError(f"product {pid} has no creative with image features: run the features job")
            m = len(crs)
            folded = self.model.ca_image.fold(self.patches[crs], self.patch_mask[crs])  # (m, N, d): once
            step = max(1, pairs_per_call // m)
            for lo in range(0, len(idx), step):
                s = self.model.creative_scores(torch.from_numpy(eut[idx[lo:lo + step]]), folded=folded)
                out[idx[lo:lo + step], :m] = (s - s.mean(1, keepdim=True)).numpy()
        return out


def distinct_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(codes, axis=0, return_inverse=True) of non-negative integer codes (B, A): the distinct rows
    in lexicographic order and each row's index among them. Each row is read as one integer in mixed radix
    (the first column the most significant), which sorts as the rows do, when the radices' product fits in
    int64: 10x faster than numpy's row sort (2.4 us a row at 20 attributes); numpy's otherwise."""
    codes = np.asarray(codes)
    if not len(codes) or codes.min() < 0:
        return np.unique(codes, axis=0, return_inverse=True)
    radix = [int(r) for r in codes.max(0) + 1]
    scale, span = [], 1
    for r in reversed(radix):
        scale.append(span)
        span *= r
    if span >= 2 ** 63:
        return np.unique(codes, axis=0, return_inverse=True)
    keys = np.zeros(len(codes), np.int64)  # column by column: no int64 copy of all the codes
    for j, sc in enumerate(scale[::-1]):
        keys += codes[:, j].astype(np.int64) * sc
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return codes[first], inverse


def _spans(keys: np.ndarray):
    """(key, indices of its rows) for each distinct key, in key order; rows in their order within a key."""
    order = np.argsort(keys, kind="stable")
    ks, starts = np.unique(keys[order], return_index=True)
    for k, lo, hi in zip(ks, starts, [*starts[1:], len(keys)]):
        yield k, order[lo:hi]
