"""The generation gallery: one HTML page, rows = products, columns = groups (the paper's Figures 4 and 6).

Each cell shows the image made for the group, the group's description, the prompt and the simulated CTR.
Images are referenced by paths relative to the page, so the folder can be copied or served as it is.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.features.templates import TABLE5_ATTRIBUTES, most_common_profile

_CSS = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.5em;vertical-align:top;max-width:16em;font-size:.85em}
img{width:128px;height:128px;image-rendering:pixelated;display:block;margin-bottom:.3em}
.ctr{font-weight:bold}.desc{color:#555}"""


def write_gallery(rows: pd.DataFrame, out_html: str | Path, title: str = "OSMF generated creatives") -> Path:
    """`rows`: product_id, title, group_id, description, prompt, image_path, sim_ctr (NaN when unknown)."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    n_groups = int(rows["group_id"].max()) + 1 if len(rows) else 0
    esc = lambda s: html.escape(str(s))  # noqa: E731
    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{esc(title)}</h1><p>{rows['product_id'].nunique()} products, {len(rows)} (product, group)"
             " images. Rows are products, columns are groups; each cell: the image for the group, the group, the prompt"
             " and the simulated CTR of the image among the group's users.</p><table><tr><th>product</th>"
             + "".join(f"<th>group {g}</th>" for g in range(n_groups)) + "</tr>"]
    for pid, prod in rows.sort_values(["product_id", "group_id"]).groupby("product_id", sort=True):
        cells = {int(r.group_id): r for r in prod.itertuples()}
        tds = []
        for g in range(n_groups):
            r = cells.get(g)
            if r is None:
                tds.append("<td></td>")
                continue
            src = os.path.relpath(r.image_path, out_html.parent)
            ctr = "" if pd.isna(r.sim_ctr) else f"<div class='ctr'>simulated CTR {r.sim_ctr:.4f}</div>"
            tds.append(f"<td data-product='{pid}' data-group='{g}'><img src='{esc(src)}' alt='product {pid} group {g}'>"
                       f"<div class='desc'>{esc(r.description)}</div><div>{esc(r.prompt)}</div>{ctr}</td>")
        lines.append(f"<tr><th>{esc(prod['title'].iloc[0])}<br>#{pid}</th>{''.join(tds)}</tr>")
    lines.append("</table></body></html>")
    out_html.write_text("\n".join(lines))
    return out_html


def group_descriptions(members: pd.DataFrame, max_attrs: int = 4) -> dict[tuple[int, int], str]:
    """A short description per (product, group): its size and the most common values of the attributes on
    which the product's groups differ most (an attribute whose mode is the same in every group says nothing)."""
    out = {}
    for pid, users in members.groupby("product_id"):
        modes = {g: most_common_profile(who) for g, who in users.groupby("group_id")}
        shares = {g: {a: float((who[a] == modes[g][a]).mean()) for a in TABLE5_ATTRIBUTES}
                  for g, who in users.groupby("group_id")}
        differing = [a for a in TABLE5_ATTRIBUTES if len({m[a] for m in modes.values()}) > 1]
        differing.sort(key=lambda a: -np.mean([shares[g][a] for g in modes]))
        for g, m in modes.items():
            n = int((users["group_id"] == g).sum())
            attrs = ", ".join(f"{a} {m[a]}" for a in differing[:max_attrs]) or "no attribute sets it apart"
            out[(int(pid), int(g))] = f"{n:,} users; most common: {attrs}"
    return out
