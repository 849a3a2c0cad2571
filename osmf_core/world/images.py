"""Procedural images of the simulated world: product cutouts with alpha masks, styled backgrounds.

The style of a creative is visible in its pixels: the palette sets the colours, the scene the layout,
the lighting the brightness field and the mood the texture, so an image encoder can learn it.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from osmf_core.world.model import CATEGORY_NAMES
from osmf_core.world.styles import STYLE_DIMS

PRODUCT_COLORS = np.array([
    [220, 40, 40], [240, 140, 30], [240, 220, 40], [60, 170, 70], [40, 170, 170], [50, 90, 210],
    [130, 60, 190], [230, 100, 170], [120, 80, 50], [30, 30, 30], [240, 240, 240], [150, 150, 150],
    [200, 170, 120], [20, 60, 40], [90, 20, 40]], dtype=np.float64)

PALETTES = {  # base, accent
    "warm": ([235, 150, 90], [180, 70, 50]), "cool": ([120, 170, 220], [60, 90, 160]),
    "pastel": ([245, 210, 225], [200, 230, 210]), "monochrome": ([200, 200, 200], [80, 80, 80]),
    "vibrant": ([250, 60, 120], [40, 200, 240]), "earthy": ([150, 120, 80], [90, 110, 60]),
    "neon": ([30, 250, 150], [250, 30, 240]), "dark": ([40, 40, 60], [90, 70, 110]),
}


def _grid(n):
    y, x = np.mgrid[0:n, 0:n] / (n - 1)
    return y, x


def product_cutout(category: int, color: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float image, mask in [0,1]) of a product of a category: a shape per category."""
    y, x = _grid(n)
    cy, cx = y - 0.5, x - 0.5
    name = CATEGORY_NAMES[category]
    k = category % 4
    if k == 0:  # tall rounded rectangle
        mask = (np.abs(cx) < 0.14) & (np.abs(cy) < 0.26)
    elif k == 1:  # wide ellipse
        mask = (cx / 0.28) ** 2 + (cy / 0.14) ** 2 < 1
    elif k == 2:  # disc
        mask = cx ** 2 + cy ** 2 < 0.22 ** 2
    else:  # triangle
        mask = (cy > -0.22) & (cy < 0.2) & (np.abs(cx) < (cy + 0.22) * 0.6)
    rgb = np.broadcast_to(PRODUCT_COLORS[color % len(PRODUCT_COLORS)], (n, n, 3)).copy()
    stripe = (np.floor((x + y) * (3 + len(name) % 4) * 2) % 2 == 0)  # a category-specific pattern
    rgb[stripe] = rgb[stripe] * 0.8 + 40
    return np.clip(rgb, 0, 255), mask.astype(np.float64)


def background(style: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """RGB float image of a background style (codes for scene, palette, lighting, mood)."""
    scene, palette, lighting, mood = (STYLE_DIMS[d][int(v)] for d, v in zip(STYLE_DIMS, style))
    base, accent = (np.array(c, dtype=np.float64) for c in PALETTES[palette])
    y, x = _grid(n)
    layouts = {
        "studio": y * 0.3,
        "kitchen": ((np.floor(x * 8) + np.floor(y * 8)) % 2) * (y > 0.5),
        "living room": (y > 0.65).astype(float),
        "bedroom": (np.floor(y * 6) % 2) * 0.6,
        "office": (np.floor(x * 10) % 2) * (y < 0.7),
        "city street": (y > 0.3 + 0.4 * (np.floor(x * 7) % 3) / 3).astype(float),
        "beach": np.select([y < 0.45, y < 0.6], [0.0, 0.6], 1.0),
        "forest": ((np.floor(x * 9) % 3) == 0).astype(float),
        "mountain": (y > 0.75 - 0.5 * np.abs(((x * 3) % 1) - 0.5)).astype(float),
        "garden": ((np.sin(x * 40) * np.sin(y * 40)) > 0.6).astype(float),
        "cafe": ((np.floor(x * 4) + np.floor(y * 4)) % 2).astype(float),
        "gym": (np.floor((x - y) * 8) % 2).astype(float),
    }
    t = layouts[scene][..., None]
    img = base * (1 - t) + accent * t
    r = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)[..., None]
    light = {
        "soft daylight": np.ones_like(r) * 1.05,
        "golden hour": 0.9 + 0.3 * x[..., None],
        "spotlight": np.clip(1.5 - 1.8 * r, 0.35, 1.5),
        "backlight": 0.7 + 0.6 * (1 - y[..., None]),
        "overcast": np.ones_like(r) * 0.85,
        "candlelight": np.clip(1.2 - 1.2 * r, 0.3, 1.2),
    }[lighting]
    img = img * light
    if lighting == "golden hour":
        img = img + np.array([30.0, 15.0, -20.0])
    if lighting == "overcast":
        img = img * 0.6 + img.mean(axis=-1, keepdims=True) * 0.4
    if lighting == "candlelight":
        img = img * np.array([1.1, 0.85, 0.6])
    if mood == "cozy":
        img = img + rng.normal(0, 6, (n, n, 1))
    elif mood == "luxurious":
        edge = (np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y)) < 0.06)[..., None]
        img = np.where(edge, np.array([212.0, 175.0, 55.0]), img)
    elif mood == "playful":
        for _ in range(6):
            cy, cx, rad = rng.random(), rng.random(), 0.04 + 0.05 * rng.random()
            dot = ((x - cx) ** 2 + (y - cy) ** 2 < rad ** 2)[..., None]
            img = np.where(dot, rng.integers(0, 256, 3).astype(float), img)
    elif mood == "energetic":
        img = img + 40 * np.sign(np.sin((x + 2 * y) * 30))[..., None]
    elif mood == "serene":
        img = img * 0.6 + img.mean() * 0.4
    return np.clip(img, 0, 255)


def composite(bg: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return bg * (1 - m) + rgb * m


def to_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))
