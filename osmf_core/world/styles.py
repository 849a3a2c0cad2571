"""The style vocabulary of backgrounds, shared by the world's click model, the renderers and the prompts:
a style is one term per dimension (scene, palette, lighting, mood); `style_prompt` writes it as a prompt,
`parse_style` reads a prompt back, `style_errors` says what a prompt gets wrong."""
from __future__ import annotations

import re

import numpy as np

# No term is a substring of another, so a prompt parses unambiguously.
# No term is a substring of another, so a prompt parses unambiguously.
STYLE_DIMS: dict[str, tuple[str, ...]] = {
    "scene": ("studio", "kitchen", "living room", "bedroom", "office", "city street",
              "beach", "forest", "mountain", "garden", "cafe", "gym"),
    "palette": ("warm", "cool", "pastel", "monochrome", "vibrant", "earthy", "neon", "dark"),
    "lighting": ("soft daylight", "golden hour", "spotlight", "backlight", "overcast", "candlelight"),
    "mood": ("minimal", "cozy", "luxurious", "playful", "energetic", "serene"),
}


DIMS = list(STYLE_DIMS)


DIM_SIZES = [len(v) for v in STYLE_DIMS.values()]


def style_prompt(style, subject: str = "the product") -> str:
    """The prompt text of a style (one code per dimension, -1 = unspecified)."""
    words = {d: (STYLE_DIMS[d][int(v)] if v >= 0 else None) for d, v in zip(DIMS, style)}
    parts = [subject]
    if words["mood"] or words["scene"]:
        parts.append(" ".join(w for w in (words["mood"], words["scene"]) if w) + " background")
    if words["palette"]:
        parts.append(f"{words['palette']} palette")
    if words["lighting"]:
        parts.append(f"{words['lighting']} lighting")
    return ", ".join(parts)


_TERM_RE = {d: [(i, re.compile(r"\b" + re.escape(t) + r"\b")) for i, t in enumerate(terms)]
            for d, terms in STYLE_DIMS.items()}


def parse_style(text: str) -> np.ndarray:
    """Style codes named in free text: for each dimension the earliest term found, -1 if none."""
    low = text.lower()
    out = np.full(len(DIMS), -1, dtype=np.int64)
    for j, d in enumerate(DIMS):
        hits = [(m.start(), i) for i, rx in _TERM_RE[d] for m in [rx.search(low)] if m]
        if hits:
            out[j] = min(hits)[1]
    return out


_SLOTS = {"background": ("mood", "scene"), "palette": ("palette",), "lighting": ("lighting",)}


def style_errors(text: str) -> list[str]:
    """What a prompt written in the style grammar of `style_prompt` gets wrong: every part after the subject
    is '<mood> <scene> background', '<palette> palette' or '<lighting> lighting' with known terms only."""
    errors = []
    for part in [p.strip().lower() for p in text.split(",")[1:] if p.strip()]:
        words, _, slot = part.rpartition(" ")
        if slot not in _SLOTS or not words:
            errors.append(f"cannot read {part!r}: write '<terms> background', '<term> palette' or '<term> lighting'")
            continue
        rest = words
        for dim in _SLOTS[slot]:  # background: an optional mood, then an optional scene, in that order
            for term in sorted(STYLE_DIMS[dim], key=len, reverse=True):
                if rest == term or rest.startswith(term + " "):
                    rest = rest[len(term):].strip()
                    break
        if rest:
            known = sorted(t for d in _SLOTS[slot] for t in STYLE_DIMS[d])
            errors.append(f"unknown style word {rest!r} in {part!r}; known {slot} terms: {', '.join(known)}")
    return errors
