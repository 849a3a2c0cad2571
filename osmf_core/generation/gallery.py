"""The generation gallery: one HTML page, rows = products, columns = the one-size image, then the groups
(the paper's Figures 4 and 6).

The first cell of a row is the product's one-size image (one prompt for all its groups); each group's cell
shows the image made for the group, the group in words, the prompt, and on a simulated world its simulated
CTR among the group's users with the lift over the one-size image's CTR among the same users. Images are
referenced by paths relative to the page, so the folder can be copied or served as it is.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from osmf_core.data.labels import describe
from osmf_core.features.templates import TABLE5_ATTRIBUTES, most_common_profile

_CSS = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.5em;vertical-align:top;max-width:16em;font-size:.85em}
img{width:128px;height:128px;image-rendering:pixelated;display:block;margin-bottom:.3em}
.ctr{font-weight:bold}.desc{color:#555}.up{color:#070}.down{color:#a00}.one{background:#f4f4f4}"""


def write_gallery(rows: pd.DataFrame, out_html: str | Path, title: str = "OSMF generated creatives",
                  one_size_source: str = "") -> Path:
    """`rows`: product_id, title, group_id, description, prompt, image_path, sim_ctr (NaN when unknown), and
    optionally one_size_prompt, one_size_path, one_size_ctr (the one-size image's simulated CTR in the row's
    group): then a one-size column, and each group's lift over it."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    n_groups = int(rows["group_id"].max()) + 1 if len(rows) else 0
    one = "one_size_path" in rows
    esc = lambda s: html.escape(str(s))  # noqa: E731
    img = lambda path, alt: f"<img src='{esc(os.path.relpath(path, out_html.parent))}' alt='{esc(alt)}'>"  # noqa: E731
    intro = (f"{rows['product_id'].nunique()} products, {len(rows)} (product, group) images. Rows are products; "
             + (f"the first column is the product's one-size image ({esc(one_size_source or 'one prompt for all its groups')}), "
                "the others its groups. " if one else "columns are its groups. ")
             + "A group's cell: its image, the group in words, the prompt and the image's simulated CTR among the "
             "group's users" + (", with the lift over the one-size image's CTR among the same users." if one else "."))
    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{esc(title)}</h1><p>{intro}</p><table><tr><th>product</th>"
             + ("<th>one size</th>" if one else "") + "".join(f"<th>group {g}</th>" for g in range(n_groups)) + "</tr>"]
    for pid, prod in rows.sort_values(["product_id", "group_id"]).groupby("product_id", sort=True):
        cells = {int(r.group_id): r for r in prod.itertuples()}
        tds = []
        if one:
            r0 = prod.iloc[0]
            tds.append(f"<td class='one' data-product='{pid}' data-group='one_size'>"
                       f"{img(r0['one_size_path'], f'product {pid} one size')}<div>{esc(r0['one_size_prompt'])}</div></td>")
        for g in range(n_groups):
            r = cells.get(g)
            if r is None:
                tds.append("<td></td>")
                continue
            tds.append(f"<td data-product='{pid}' data-group='{g}'>{img(r.image_path, f'product {pid} group {g}')}"
                       f"<div class='desc'>{esc(r.description)}</div><div>{esc(r.prompt)}</div>{_ctr(r, one)}</td>")
        lines.append(f"<tr><th>{esc(prod['title'].iloc[0])}<br>#{pid}</th>{''.join(tds)}</tr>")
    lines.append("</table></body></html>")
    out_html.write_text("\n".join(lines))
    return out_html


def _ctr(r, one: bool) -> str:
    """The cell's simulated CTR and, beside a one-size column, its lift over the one-size image in the group."""
    if pd.isna(r.sim_ctr):
        return ""
    text = f"<div class='ctr'>simulated CTR {r.sim_ctr:.4f}"
    if one and not pd.isna(r.one_size_ctr) and r.one_size_ctr > 0:
        lift = r.sim_ctr / r.one_size_ctr - 1
        text += f" <span class='{'up' if lift >= 0 else 'down'}'>({lift:+.1%} over one size, {r.one_size_ctr:.4f})</span>"
    return text + "</div>"


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
            attrs = ", ".join(describe(a, m[a]) for a in differing[:max_attrs]) or "no attribute sets it apart"
            out[(int(pid), int(g))] = f"{n:,} users; most common: {attrs}"
    return out
