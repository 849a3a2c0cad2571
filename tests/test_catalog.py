"""The table catalog and the DDL generated from it (no Spark)."""
from pathlib import Path

import pytest
from pyspark.sql import types as T

from osmf_core.data import catalog as C
from osmf_core.data import ddl

ROOT = Path(__file__).resolve().parents[1]


def test_committed_ddl_equals_a_fresh_render():
    folder = ROOT / "sql" / "ddl"
    committed = {p.name for p in folder.glob("*.sql")}
    assert committed == {ddl.file_name(t) for t in C.TABLES}, "run `make ddl`"
    for t in C.TABLES:
        assert (folder / ddl.file_name(t)).read_text() == ddl.render(t), f"{t.fqn}: run `make ddl`"


def test_every_design_table_is_declared_once():
    names = [t.fqn for t in C.TABLES]
    assert len(names) == len(set(names))
    for fqn in ["raw.users", "raw.products", "raw.creatives", "raw.impressions", "gaip.groups",
                "gaip.user_groups", "gaip.group_ctr", "gaip.pairs", "gaip.rejects", "gaip.metrics",
                "gen.prompts", "gen.creatives"]:
        assert C.table(fqn).fqn == fqn
    with pytest.raises(KeyError, match="no table"):
        C.table("raw.nope")


def test_user_attributes_follow_table_4():
    assert len(C.USER_ATTRIBUTES) == 20
    card = {a: n for a, (n, _) in C.USER_ATTRIBUTES.items()}
    assert (card["age"], card["color"], card["child_age"], card["profession"], card["education"],
            card["resident_city_level"], card["customer_points"], card["user_active"]) == (13, 15, 10, 11, 6, 5, 5, 3)
    assert C.USERS.column_names == ["user_id", *C.USER_ATTRIBUTES]


def test_schema_carries_types_nullability_and_partitions():
    s = C.IMPRESSIONS.schema
    assert s["event_date"].dataType == T.DateType() and not s["event_date"].nullable
    assert C.IMPRESSIONS.partition_by == ("event_date",)
    assert C.GENERATED.schema["grm_score"].nullable
    assert C.IMPRESSIONS.path("/wh/") == "/wh/raw/impressions"


def test_a_bad_declaration_is_refused():
    with pytest.raises(ValueError, match="not a column"):
        C.Table("raw", "x", (C.Column("a", T.LongType()),), grain="g", key=("b",))
    with pytest.raises(ValueError, match="duplicate"):
        C.Table("raw", "x", (C.Column("a", T.LongType()), C.Column("a", T.LongType())), grain="g", key=("a",))
