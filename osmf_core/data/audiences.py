"""The audiences of a regroup run: every user of the given products' groups with their attributes, as the
complete run of that date published them (gaip.user_groups joined with raw.users)."""
from __future__ import annotations

import pandas as pd

from osmf_core.data import catalog as C
from osmf_core.data.reader import ATTRS, read_frame
from osmf_core.data.runs import published

AUDIENCE_TABLES = (C.USERS, C.USER_GROUPS)  # read by audiences


def audiences(warehouse: str, run_date: str, products) -> pd.DataFrame:
    """(product_id, group_id, user_id, attributes...) of the given products' groups in a regroup run."""
    products = set(int(p) for p in products)
    run = published(warehouse, run_date)  # the groups as the complete regroup run of that date left them
    ug = read_frame(C.USER_GROUPS, warehouse, ["product_id", "user_id", "group_id"], {"run_date": run_date},
                    version=run.version(C.USER_GROUPS))
    ug = ug[ug["product_id"].isin(products)]
    users = read_frame(C.USERS, warehouse, ["user_id", *ATTRS])
    return ug.merge(users, on="user_id")
