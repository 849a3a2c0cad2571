"""Words for the integer codes of the user attributes (catalog.USER_ATTRIBUTES), for pages people read:
"female, age 25-29", not "gender 0, age 4".

One entry per attribute: the label of every code, in code order. A platform with its own attribute
dictionary replaces this table; `describe` is all the rest of the code uses.
"""
from __future__ import annotations

from osmf_core.data.catalog import USER_ATTRIBUTES

_AGES = ("under 18", "18-20", "21-23", "24-26", "27-29", "30-34", "35-39", "40-44", "45-49", "50-54", "55-59",
         "60-64", "65+")
_COLOURS = ("black", "white", "grey", "silver", "red", "pink", "orange", "yellow", "green", "teal", "blue", "navy",
            "purple", "brown", "gold")
_PROFESSIONS = ("student", "office worker", "engineer", "teacher", "doctor or nurse", "civil servant", "self-employed",
                "sales", "factory worker", "farmer", "retired")

LABELS: dict[str, tuple[str, ...]] = {
    "age": tuple(f"age {a}" for a in _AGES),
    "color": tuple(f"likes {c}" for c in _COLOURS),
    "is_vip": ("not VIP", "VIP"),
    "os_plant": ("Android", "iOS", "HarmonyOS", "other OS"),
    "has_car": ("no car", "car owner"),
    "gender": ("female", "male"),
    "marriage": ("marital status unknown", "single", "married"),
    "child_age": ("no children", *(f"children's age band {i}" for i in range(1, 10))),
    "has_house": ("no house", "home owner"),
    "profession": _PROFESSIONS,
    "user_active": ("rarely active", "active", "very active"),
    "education": ("primary school", "middle school", "high school", "college", "bachelor's", "postgraduate"),
    "target_group": ("student", "young professional", "urban family", "new parent", "senior", "small-town youth",
                     "white-collar single", "affluent middle-aged"),
    "member_level": tuple(f"member tier {i}" for i in range(7)),
    "customer_points": tuple(f"points level {i}" for i in range(5)),
    "purchase_power": ("top purchasing power", *(f"purchasing power {i + 1} of 7" for i in range(1, 6)),
                       "lowest purchasing power"),
    "resident_city_level": tuple(f"tier-{i + 1} city" for i in range(5)),
    "per_month_order_num": tuple(f"order bucket {i} (monthly orders)" for i in range(8)),
    "is_impulse_purchase_user": ("deliberate buyer", "impulse buyer"),
    "promotions_sensitive_level": ("ignores promotions", "rarely swayed by promotions", "swayed by promotions",
                                   "often swayed by promotions", "promotion hunter"),
}
for _attr, (_card, _) in USER_ATTRIBUTES.items():  # one label per code, for every attribute
    assert len(LABELS[_attr]) == _card, (_attr, len(LABELS[_attr]), _card)


def describe(attr: str, code: int) -> str:
    """The words for `code` of `attr`; `attr code` for a code outside the table (never a crash on a page)."""
    labels = LABELS.get(attr, ())
    return labels[code] if 0 <= int(code) < len(labels) else f"{attr} {code}"
