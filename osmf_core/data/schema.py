"""What a table declaration is: its columns with types, nullability and comments, its grain and key, its
partitioning, and where it lives in a warehouse (the catalog declares every table with these)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    nullable: bool = False
    comment: str = ""


@dataclass(frozen=True)
class Table:
    layer: str  # raw | gaip | gen
    name: str
    columns: tuple[Column, ...]
    grain: str  # what one row means
    key: tuple[str, ...]  # columns unique per row (the grain as columns)
    partition_by: tuple[str, ...] = ()
    comment: str = ""
    _by_name: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.fqn}: duplicate column names in {names}")
        for col in (*self.key, *self.partition_by):
            if col not in names:
                raise ValueError(f"{self.fqn}: key/partition column {col!r} is not a column")
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @property
    def fqn(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> T.StructType:
        return T.StructType(
            [T.StructField(c.name, c.dtype, c.nullable, {"comment": c.comment} if c.comment else {})
             for c in self.columns]
        )

    def column(self, name: str) -> Column:
        return self._by_name[name]

    def path(self, warehouse: str) -> str:
        return f"{warehouse.rstrip('/')}/{self.layer}/{self.name}"
