"""Training inputs read through petastorm from the files of a Delta table snapshot.

The active files of the snapshot come from the Delta log (the `deltalake` package), so a reader sees
exactly one version of the table; petastorm's batch reader streams their row groups (sharded per rank),
and a bounded buffer shuffles rows. No pandas dump of a whole table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from petastorm import make_batch_reader

from osmf_core.data import catalog as C
from osmf_core.data.config import ConfigError

ATTRS = list(C.USER_ATTRIBUTES)
EXAMPLE_FIELDS = ["impression_id", "user_id", "product_id", "creative_id", "clicked", *ATTRS]


_MADE_BY = {"raw": "make simulate, or ingest the logs", "gaip": "make regroup", "gen": "make generate",
            "feat.instructions": "make instructions", "feat.grm_examples": "make instructions",
            "feat.product_pairs": "make instructions", "feat": "make features"}


def require_tables(tables, warehouse: str, exists=None) -> None:
    """ConfigError naming the first of `tables` that is not a Delta table in `warehouse`, and the target that
    makes it. The Delta log is asked through deltalake, or through `exists(table)` (a Spark job passes
    `store.exists_in(spark, warehouse)`)."""
    for t in tables:
        path = t.path(warehouse)
        found = exists(t) if exists is not None else DeltaTable.is_deltatable(path)
        if not found:
            raise ConfigError(f"{t.fqn}: no Delta table at {path} ({made_by(t)})")


def made_by(t: C.Table) -> str:
    return _MADE_BY.get(t.fqn) or _MADE_BY[t.layer]


def run_of(t: C.Table, warehouse: str, run_date: str = "", needs=(), column: str = "run_date") -> str:
    """The run of `t` a job reads: `run_date` when given, else the latest value of the partition column in
    the table's current snapshot (from the Delta log through deltalake).
    ConfigError (one line, before any work) when `t` or a table of `needs` is missing, when `t` has no run,
    or when it has no run of that date."""
    require_tables((t, *needs), warehouse)
    runs = {str(p[column]) for p in DeltaTable(t.path(warehouse)).partitions() if p.get(column) is not None}
    runs = sorted(runs)
    if not runs:
        raise ConfigError(f"{t.fqn} at {t.path(warehouse)} is empty: it has no {column} partition ({made_by(t)})")
    if not run_date:
        return runs[-1]
    if str(run_date) not in runs:
        raise ConfigError(f"--run-date {run_date}: {t.fqn} has no run of that date; it has {', '.join(runs[-5:])}")
    return str(run_date)


def snapshot_files(t: C.Table, warehouse: str, partition: dict | None = None, version: int | None = None) -> list[str]:
    """URLs of the Parquet files of the table's current snapshot (or of `version`), optionally of one partition."""
    filters = [(k, "=", str(v)) for k, v in (partition or {}).items()] or None
    files = DeltaTable(t.path(warehouse), version=version).file_uris(partition_filters=filters)
    if not files:
        raise FileNotFoundError(f"{t.fqn} at {t.path(warehouse)} has no files for {partition or 'any partition'}")
    return sorted(f if "://" in f else f"file://{f}" for f in files)


def read_columns(t: C.Table, warehouse: str, fields: list[str], partition: dict | None = None,
                 shard: int = 0, shards: int = 1, shuffle_seed: int | None = None, version: int | None = None):
    """Yield dicts of numpy columns, one per Parquet row group, through petastorm's batch reader."""
    files = snapshot_files(t, warehouse, partition, version)
    if shuffle_seed is not None:  # file order from our own seeded RNG: petastorm's is not reproducible
        files = [files[i] for i in np.random.default_rng(shuffle_seed).permutation(len(files))]
    shards = min(shards, len(files)) if shards > 1 else 1
    with make_batch_reader(files, schema_fields=fields, num_epochs=1, workers_count=1, shuffle_row_groups=False,
                           cur_shard=shard if shards > 1 else None, shard_count=shards if shards > 1 else None,
                           reader_pool_type="dummy") as reader:
        for batch in reader:
            yield {f: _rows(getattr(batch, f)) for f in fields}


def read_frame(t: C.Table, warehouse: str, fields: list[str], partition: dict | None = None,
               version: int | None = None) -> pd.DataFrame:
    """The columns of a (small) table or partition as one pandas DataFrame, through the same reader."""
    return pd.concat([pd.DataFrame(g) for g in read_columns(t, warehouse, fields, partition, version=version)],
                     ignore_index=True)


def _rows(values) -> np.ndarray:
    """A column as a 1-d array: petastorm gives a list column as 2-d when its row group's lists happen to
    be of one length and as objects when not; rows of lists are always objects here, so groups concatenate."""
    arr = np.asarray(values)
    if arr.ndim > 1:
        obj = np.empty(len(arr), dtype=object)
        obj[:] = list(arr)
        return obj
    return arr


def row_batches(t: C.Table, warehouse: str, fields: list[str], partition: dict | None, batch_size: int,
                seed: int | None, shard: int = 0, shards: int = 1, buffer_rows: int = 65_536,
                drop_last: bool = False, keep=None):
    """Batches (dicts of numpy columns) of any catalog table's rows through petastorm; shuffled through a
    bounded buffer when a seed is given (file order too), in table order when not. `keep(group, rng)`
    may return a boolean mask that drops rows of each row group before batching."""
    rng = np.random.default_rng(seed) if seed is not None else None
    pending: list[dict] = []
    held = 0

    def flush(final: bool):
        nonlocal pending, held
        cols = {f: np.concatenate([p[f] for p in pending]) for f in fields}
        n = len(cols[fields[0]])
        order = rng.permutation(n) if rng is not None else np.arange(n)
        full = n - n % batch_size
        for lo in range(0, full, batch_size):
            yield {f: v[order[lo:lo + batch_size]] for f, v in cols.items()}
        rest = order[full:]
        if final:
            pending, held = [], 0
            if len(rest) and not drop_last:
                yield {f: v[rest] for f, v in cols.items()}
        else:
            pending = [{f: v[rest] for f, v in cols.items()}]
            held = len(rest)

    for group in read_columns(t, warehouse, fields, partition, shard, shards, shuffle_seed=seed):
        if keep is not None:
            mask = keep(group, rng)
            group = {f: v[mask] for f, v in group.items()}
        pending.append(group)
        held += len(group[fields[0]])
        if held >= buffer_rows:
            yield from flush(final=False)
    if held:
        yield from flush(final=True)


def example_batches(warehouse: str, split: str, batch_size: int, seed: int | None, shard: int = 0,
                    shards: int = 1, buffer_rows: int = 65_536, drop_last: bool = False, neg_rate: float = 1.0):
    """Batches of feat.paag_examples rows; shuffled through a buffer when a seed is given.

    `neg_rate` < 1 keeps every clicked row and that share of the others (negative downsampling, drawn
    anew each epoch from the seed): the trainer adds log(neg_rate) to the logits so the model stays
    calibrated to the full log."""
    if not 0 < neg_rate <= 1:
        raise ValueError(f"neg_rate must be in (0, 1], got {neg_rate}")
    if neg_rate < 1 and seed is None:
        raise ValueError("negative downsampling needs a seed")
    keep = None if neg_rate == 1 else \
        (lambda g, rng: g["clicked"].astype(bool) | (rng.random(len(g["clicked"])) < neg_rate))
    return row_batches(C.PAAG_EXAMPLES, warehouse, EXAMPLE_FIELDS, {"split": split}, batch_size, seed, shard,
                       shards, buffer_rows, drop_last, keep)


@dataclass
class FeatureBank:
    """Frozen-encoder features of product titles and creative images, padded, indexed by id: every product's
    (`load`), or a few products' from rows handed over with them (`from_rows`, the regroup's calls)."""

    product_ids: np.ndarray  # sorted
    title: np.ndarray  # (P, T, text_dim) float32
    title_mask: np.ndarray  # (P, T) bool
    creative_ids: np.ndarray  # sorted
    patches: np.ndarray  # (C, N, image_dim) float32
    patch_mask: np.ndarray  # (C, N) bool
    creative_products: np.ndarray | None = None  # (C,) each creative's product, when the rows carried it
    projected: bool = False  # the tokens are already PAAG's d-wide projections of the features (the regroup's)

    @staticmethod
    def _padded(ids: np.ndarray, counts: np.ndarray, feats, dim: int):
        """Rows of n x dim features (or longer, zero past n), flattened -> ids sorted, (R, max n, dim), mask."""
        order = np.argsort(ids, kind="stable")
        width = int(counts.max()) if len(counts) else 1
        out = np.zeros((len(ids), width, dim), dtype=np.float32)
        mask = np.zeros((len(ids), width), dtype=bool)
        for row, i in enumerate(order):  # rows hold n x dim features, or max_n x dim zero-padded
            f = np.asarray(feats[i], dtype=np.float32).reshape(-1, dim)[:counts[i]]
            out[row, :counts[i]] = f
            mask[row, :counts[i]] = True
        return ids[order], out, mask, order

    @classmethod
    def _load(cls, t: C.Table, warehouse: str, encoder: str, id_col: str, n_col: str):
        ids, feats, counts, dim = [], [], [], None
        for g in read_columns(t, warehouse, [id_col, "encoder", n_col, "dim", "features"]):
            keep = g["encoder"] == encoder
            ids.append(g[id_col][keep])
            counts.append(g[n_col][keep])
            feats.extend(list(g["features"][keep]))
            if keep.any():
                dim = int(g["dim"][keep][0])
        if dim is None:
            raise ValueError(f"{t.fqn} has no features from encoder {encoder!r}: run the features job")
        return cls._padded(np.concatenate(ids), np.concatenate(counts), feats, dim)[:3]

    @classmethod
    def load(cls, warehouse: str, text_encoder: str, image_encoder: str | None) -> "FeatureBank":
        pid, title, tmask = cls._load(C.TITLE_TOKENS, warehouse, text_encoder, "product_id", "n_tokens")
        if image_encoder is None:  # e_u|t needs titles only
            cid, patches, pmask = np.zeros(0, np.int64), np.zeros((0, 1, 1), np.float32), np.zeros((0, 1), bool)
        else:
            cid, patches, pmask = cls._load(C.IMAGE_PATCHES, warehouse, image_encoder, "creative_id", "n_patches")
        return cls(pid, title, tmask, cid, patches, pmask)

    @classmethod
    def from_rows(cls, rows: dict, projected: bool = False) -> "FeatureBank":
        """The bank of the products in `rows` (grouping.batch.FEATURE_SCHEMA): columns product_id, is_title,
        creative_id (an image row's), items (its tokens or patches), dim and features (flat, as in feat.title_tokens
        and feat.image_patches), each a numpy array (features: one array per row), one encoder per kind."""
        pid, cid = np.asarray(rows["product_id"], np.int64), np.asarray(rows["creative_id"], np.int64)
        image = ~np.asarray(rows["is_title"], bool)
        feats, n, dim = rows["features"], np.asarray(rows["items"], np.int64), np.asarray(rows["dim"], np.int64)

        def part(sel: np.ndarray, ids: np.ndarray):
            idx = np.flatnonzero(sel)
            d = int(dim[idx[0]]) if len(idx) else 1
            return cls._padded(ids[idx], n[idx], [feats[i] for i in idx], d)

        tid, title, tmask, _ = part(~image, pid)
        ccid, patches, pmask, order = part(image, cid)
        return cls(tid, title, tmask, ccid, patches, pmask, pid[np.flatnonzero(image)][order], projected)

    @staticmethod
    def _rows(sorted_ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
        rows = np.minimum(np.searchsorted(sorted_ids, wanted), max(len(sorted_ids) - 1, 0))
        found = sorted_ids[rows] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
        if not found.all():
            raise KeyError(f"no features for {what} {np.unique(wanted[~found])[:5].tolist()}: rerun the features job")
        return rows

    def title_rows(self, product_ids: np.ndarray) -> np.ndarray:
        """Row of each product in the title arrays (KeyError for a product without features)."""
        return self._rows(self.product_ids, np.asarray(product_ids), "products")

    def titles(self, product_ids: np.ndarray):
        rows = self.title_rows(product_ids)
        return self.title[rows], self.title_mask[rows]

    def images(self, creative_ids: np.ndarray):
        rows = self._rows(self.creative_ids, np.asarray(creative_ids), "creatives")
        return self.patches[rows], self.patch_mask[rows]

    @property
    def text_dim(self) -> int:
        return self.title.shape[-1]

    @property
    def image_dim(self) -> int:
        return self.patches.shape[-1]
