"""The table catalog: every OSMF table declared once.

Writers, readers, pandas-UDF return schemas and the DDL in sql/ddl/ all derive from the
declarations below. A table or column name written anywhere else is a bug waiting to happen.

Layers:
  raw   the ad platform's logs (simulated by default, loaded through osmf_core.data.ingest)
  gaip  the Grouped Advertising Image Preference tables written by the nightly regroup
  gen   prompts and generated creatives
  feat  model inputs: frozen-encoder features and training rows
"""
from __future__ import annotations

from pyspark.sql import types as T

from osmf_core.data.schema import Column, Table

# The 20 user profile attributes of the paper's Table 4, with the number of codes each takes.
# Every attribute is stored as an integer code in [0, cardinality).
USER_ATTRIBUTES: dict[str, tuple[int, str]] = {
    "age": (13, "age segment, 13 segments from under 18 to 65+"),
    "color": (15, "preferred product colour, 15 options"),
    "is_vip": (2, "VIP member (1) or not (0)"),
    "os_plant": (4, "most used mobile OS: android, ios, harmonyos, other"),
    "has_car": (2, "owns a car"),
    "gender": (2, "0 female, 1 male"),
    "marriage": (3, "0 unknown, 1 single, 2 married"),
    "child_age": (10, "age range of the user's children, 0 = no child, 10 segments"),
    "has_house": (2, "owns a house"),
    "profession": (11, "profession, 11 types"),
    "user_active": (3, "activity level on the platform, 3 levels"),
    "education": (6, "education level, 6 categories"),
    "target_group": (8, "social group: student, young professional, urban family, ..."),
    "member_level": (7, "membership tier, higher = higher tier"),
    "customer_points": (5, "engagement, five levels"),
    "purchase_power": (7, "purchasing ability, lower = more power"),
    "resident_city_level": (5, "city tier: 0 = tier 1 ... 4 = tier 5"),
    "per_month_order_num": (8, "monthly paid orders over six months, 8 buckets"),
    "is_impulse_purchase_user": (2, "tends to make impulse purchases"),
    "promotions_sensitive_level": (5, "sensitivity to promotions, higher = more sensitive"),
}


def _c(name, dtype, comment="", nullable=False):
    return Column(name, dtype, nullable, comment)


_LONG, _INT, _STR, _DBL, _FLT = T.LongType(), T.IntegerType(), T.StringType(), T.DoubleType(), T.FloatType()
_DATE, _BIN, _TS = T.DateType(), T.BinaryType(), T.TimestampType()
# Delta enforces NOT NULL on top-level columns only, so array elements are declared nullable
_VEC = T.ArrayType(T.FloatType(), containsNull=True)

# ----------------------------------------------------------------------------------------- raw
USERS = Table(
    "raw", "users",
    (_c("user_id", _LONG, "platform user id"),
     *(_c(a, _INT, desc) for a, (_, desc) in USER_ATTRIBUTES.items())),
    grain="one row per user",
    key=("user_id",),
    comment="user profiles with the 20 attributes of the paper's Table 4 as integer codes",
)

PRODUCTS = Table(
    "raw", "products",
    (_c("product_id", _LONG, "product id"),
     _c("category", _STR, "product category"),
     _c("title", _STR, "product title"),
     _c("image", _BIN, "product cutout, PNG RGB"),
     _c("mask", _BIN, "alpha mask of the product, PNG L (255 = product)")),
    grain="one row per product",
    key=("product_id",),
)

CREATIVES = Table(
    "raw", "creatives",
    (_c("creative_id", _LONG, "creative id"),
     _c("product_id", _LONG, "the product shown"),
     _c("prompt", _STR, "background prompt the creative was made from"),
     _c("image", _BIN, "advertising image, PNG RGB")),
    grain="one row per creative",
    key=("creative_id",),
)

IMPRESSIONS = Table(
    "raw", "impressions",
    (_c("event_date", _DATE, "day of the impression"),
     _c("impression_id", _LONG, "event id, unique"),
     _c("user_id", _LONG, "viewer"),
     _c("creative_id", _LONG, "creative shown"),
     _c("clicked", _INT, "1 if clicked, else 0")),
    grain="one row per ad impression",
    key=("impression_id",),
    partition_by=("event_date",),
)

# ---------------------------------------------------------------------------------------- gaip
REJECTS = Table(
    "gaip", "rejects",
    (_c("run_date", _DATE, "load run that saw the row"),
     _c("source", _STR, "table the row was meant for"),
     _c("load_id", _STR, "the load: a digest of the table and the input files (a rerun of one load replaces its "
        "rows); null for rows of loads older than load ids", nullable=True),
     _c("reason", _STR, "first rule the row broke"),
     _c("row_json", _STR, "the rejected row as JSON")),
    grain="one row per rejected input row",
    key=("run_date", "source", "load_id", "row_json"),
    partition_by=("run_date", "source"),
    comment="quarantine: rows in = rows accepted + rows here",
)

RUNS = Table(
    "gaip", "runs",
    (_c("run_id", _STR, "unique id of the run (run date and commit time)"),
     _c("run_date", _DATE, "run date the run wrote"),
     _c("stage", _STR, "job that published it: regroup"),
     _c("status", _STR, "complete: every table of the run is committed"),
     _c("committed_at", _TS, "when the run was published (UTC)"),
     _c("versions", T.MapType(_STR, _LONG, valueContainsNull=True),
        "Delta version of each table of the run once it was written, by table name")),
    grain="one row per published run",
    key=("run_id",),
    comment="run ledger: a run is visible once its row is here; readers of the latest run read its tables at "
            "the versions of the newest row",
)

GROUPS = Table(
    "gaip", "groups",
    (_c("run_date", _DATE, "regroup run"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group within the product, 0..k_star-1"),
     _c("k_star", _INT, "number of groups chosen by silhouette"),
     _c("silhouette", _DBL, "mean silhouette coefficient at k_star"),
     _c("size", _LONG, "users in the group"),
     _c("centroid", _VEC, "group centroid of e_u|t"),
     _c("points", T.ArrayType(_VEC, containsNull=True), "percentile points, one per entry of the percentile set"),
     _c("percentiles", T.ArrayType(_INT, containsNull=True), "the percentile set used")),
    grain="one row per (run date, product, group)",
    key=("run_date", "product_id", "group_id"),
    partition_by=("run_date",),
)

USER_GROUPS = Table(
    "gaip", "user_groups",
    (_c("run_date", _DATE, "regroup run"),
     _c("product_id", _LONG, "product"),
     _c("user_id", _LONG, "user"),
     _c("group_id", _INT, "assigned group")),
    grain="one row per (run date, product, user)",
    key=("run_date", "product_id", "user_id"),
    partition_by=("run_date",),
)

GROUP_CTR = Table(
    "gaip", "group_ctr",
    (_c("run_date", _DATE, "regroup run"),
     _c("product_id", _LONG, "product"),
     _c("creative_id", _LONG, "creative"),
     _c("group_id", _INT, "group"),
     _c("impressions", _LONG, "impressions of the creative in the group"),
     _c("clicks", _LONG, "clicks of the creative in the group"),
     _c("ctr", _DBL, "clicks / impressions")),
    grain="one row per (run date, product, creative, group)",
    key=("run_date", "product_id", "creative_id", "group_id"),
    partition_by=("run_date",),
)

PAIRS = Table(
    "gaip", "pairs",
    (_c("run_date", _DATE, "regroup run"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group"),
     _c("creative_a", _LONG, "first creative"),
     _c("creative_b", _LONG, "second creative"),
     _c("ctr_a", _DBL, "group CTR of creative_a"),
     _c("ctr_b", _DBL, "group CTR of creative_b"),
     _c("label", _INT, "1 if ctr_a > ctr_b else 0")),
    grain="one row per (run date, product, group, creative pair)",
    key=("run_date", "product_id", "group_id", "creative_a", "creative_b"),
    partition_by=("run_date",),
)

METRICS = Table(
    "gaip", "metrics",
    (_c("run_date", _DATE, "run the metric belongs to"),
     _c("stage", _STR, "pipeline stage that measured it"),
     _c("name", _STR, "metric name"),
     _c("value", _DBL, "metric value")),
    grain="one row per (run date, stage, metric)",
    key=("run_date", "stage", "name"),
    partition_by=("run_date",),
)

# ----------------------------------------------------------------------------------------- gen
PROMPTS = Table(
    "gen", "prompts",
    (_c("run_date", _DATE, "generation run"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group the prompt targets"),
     _c("model_version", _STR, "G-MLLM version that wrote it"),
     _c("prompt_idx", _INT, "index among the prompts sampled for this (product, group)"),
     _c("prompt", _STR, "background prompt")),
    grain="one row per (run date, product, group, model version, prompt index)",
    key=("run_date", "product_id", "group_id", "model_version", "prompt_idx"),
    partition_by=("run_date",),
)

GENERATED = Table(
    "gen", "creatives",
    (_c("run_date", _DATE, "generation run"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group the image is for"),
     _c("model_version", _STR, "G-MLLM version"),
     _c("prompt", _STR, "prompt the image was rendered from"),
     _c("image_path", _STR, "rendered image file"),
     _c("grm_score", _DBL, "GRM: mean P(this image beats each logged creative of the product) in the group", nullable=True),
     _c("sim_ctr", _DBL, "simulated expected CTR in the group", nullable=True)),
    grain="one row per (run date, product, group, model version)",
    key=("run_date", "product_id", "group_id", "model_version"),
    partition_by=("run_date",),
)

# ---------------------------------------------------------------------------------------- feat
# Frozen-encoder features, computed once per product / creative so training reads small rows.
TITLE_TOKENS = Table(
    "feat", "title_tokens",
    (_c("product_id", _LONG, "product"),
     _c("encoder", _STR, "text encoder that made the features"),
     _c("n_tokens", _INT, "tokens of the title"),
     _c("dim", _INT, "feature size of a token"),
     _c("features", _VEC, "max_tokens x dim token features, row-major, zero past n_tokens")),
    grain="one row per (product, text encoder)",
    key=("product_id", "encoder"),
)

IMAGE_PATCHES = Table(
    "feat", "image_patches",
    (_c("creative_id", _LONG, "creative"),
     _c("encoder", _STR, "image encoder that made the features"),
     _c("n_patches", _INT, "patches of the image"),
     _c("dim", _INT, "feature size of a patch"),
     _c("features", _VEC, "n_patches x dim patch features, row-major")),
    grain="one row per (creative, image encoder)",
    key=("creative_id", "encoder"),
)

PAAG_EXAMPLES = Table(
    "feat", "paag_examples",
    (_c("split", _STR, "train (earlier days) or test (the last days of the window)"),
     _c("event_date", _DATE, "day of the impression"),
     _c("impression_id", _LONG, "impression"),
     _c("user_id", _LONG, "viewer"),
     _c("product_id", _LONG, "product of the creative"),
     _c("creative_id", _LONG, "creative shown"),
     _c("clicked", _INT, "label"),
     *(_c(a, _INT, desc) for a, (_, desc) in USER_ATTRIBUTES.items())),
    grain="one row per impression of the log window, with the viewer's attributes",
    key=("impression_id",),
    partition_by=("split",),
    comment="PAAG training rows, read through petastorm",
)

# G-MLLM and GRM training rows, built by jobs/build_instructions.py from the gaip and raw tables. Group
# features are flattened here (petastorm reads no nested lists): centroid then points, group_dim floats each.
INSTRUCTIONS = Table(
    "feat", "instructions",
    (_c("run_date", _DATE, "regroup run the groups come from"),
     _c("task", _STR, "group_analysis, behavioral_prediction, product_understanding, prompt_generation, creative_captioning"),
     _c("template", _INT, "index of the Table 5 template used"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group the row is about, -1 = none (no group token)"),
     _c("example", _INT, "index among the rows of this (task, product, group)"),
     _c("instruction", _STR, "prompt text with <group> and <image> placeholders"),
     _c("response", _STR, "target text"),
     _c("image", _BIN, "PNG shown at <image>, empty when the instruction has none"),
     _c("group_features", _VEC, "centroid and percentile points of the group, flattened; empty for none"),
     _c("group_dim", _INT, "size of one group vector (0 when none)"),
     _c("split", _STR, "train, or test: a held-out product, read by no training stream (features.split)")),
    grain="one row per (run date, task, product, group, example)",
    key=("run_date", "task", "product_id", "group_id", "example"),
    partition_by=("run_date", "split"),
    comment="instruction data of the four G-MLLM pre-training tasks (paper Table 5)",
)

GRM_EXAMPLES = Table(
    "feat", "grm_examples",
    (_c("run_date", _DATE, "regroup run the pairs come from"),
     _c("split", _STR, "train or test (held-out products)"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "group"),
     _c("creative_a", _LONG, "first creative"),
     _c("creative_b", _LONG, "second creative"),
     _c("title", _STR, "product title"),
     _c("image_a", _BIN, "PNG of creative_a"),
     _c("image_b", _BIN, "PNG of creative_b"),
     _c("group_features", _VEC, "centroid and percentile points of the group, flattened"),
     _c("group_dim", _INT, "size of one group vector"),
     _c("label", _INT, "1 if creative_a has the higher CTR in the group")),
    grain="one row per (run date, product, group, creative pair)",
    key=("run_date", "product_id", "group_id", "creative_a", "creative_b"),
    partition_by=("run_date", "split"),
    comment="GRM rows: gaip.pairs with the two images and the group features, read through petastorm",
)
PRODUCT_PAIRS = Table(
    "feat", "product_pairs",
    (_c("run_date", _DATE, "regroup run whose log window the CTRs come from"),
     _c("split", _STR, "train or test (held-out products, features.split)"),
     _c("product_id", _LONG, "product"),
     _c("group_id", _INT, "-1: the product's whole audience, no group"),
     _c("creative_a", _LONG, "first creative"),
     _c("creative_b", _LONG, "second creative"),
     _c("title", _STR, "product title"),
     _c("image_a", _BIN, "PNG of creative_a"),
     _c("image_b", _BIN, "PNG of creative_b"),
     _c("group_features", _VEC, "empty: no group"),
     _c("group_dim", _INT, "0: no group"),
     _c("label", _INT, "1 if creative_a has the higher CTR among all the product's viewers")),
    grain="one row per (run date, product, creative pair)",
    key=("run_date", "product_id", "creative_a", "creative_b"),
    partition_by=("run_date", "split"),
    comment="the one-size reward model's rows, as CAIG's: creative pairs by CTR over the product's whole audience",
)

TABLES: tuple[Table, ...] = (
    USERS, PRODUCTS, CREATIVES, IMPRESSIONS,
    REJECTS, RUNS, GROUPS, USER_GROUPS, GROUP_CTR, PAIRS, METRICS,
    PROMPTS, GENERATED,
    TITLE_TOKENS, IMAGE_PATCHES, PAAG_EXAMPLES, INSTRUCTIONS, GRM_EXAMPLES, PRODUCT_PAIRS,
)


def table(fqn: str) -> Table:
    """The declaration of a table by its 'layer.name'."""
    for t in TABLES:
        if t.fqn == fqn:
            return t
    raise KeyError(f"no table {fqn!r} in the catalog; known: {[t.fqn for t in TABLES]}")
