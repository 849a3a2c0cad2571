"""Rendering a background prompt around a product: one interface, two back ends.

    ProceduralRenderer   the simulator's own drawing (osmf_core/world/images.py): the prompt's style words are
                         drawn faithfully, so the simulated world can score the result; for the Group-DPO
                         loop and tests on the simulated world
    InpaintRenderer      diffusers' ControlNet-Inpaint Stable Diffusion pipeline (osmf_core/rendering/inpaint.py):
                         the background around the product is repainted from the prompt; production

Both take RenderJobs and return uint8 RGB images in which every product pixel (alpha > 0) is the product's
own pixel, untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from osmf_core.world import images
from osmf_core.world.styles import DIM_SIZES, parse_style


@dataclass
class RenderJob:
    """One image to draw: the product cutout (RGB premultiplied by alpha, as raw.products stores it), its
    alpha mask in [0, 1], the background prompt, and a seed (int or sequence of ints) for the randomness."""

    product_id: int
    rgb: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) float in [0, 1]
    prompt: str
    seed: int | tuple = 0

    @staticmethod
    def from_pngs(product_id: int, image_png: bytes, mask_png: bytes, prompt: str, seed=0) -> "RenderJob":
        mask = images.from_png(mask_png).astype(np.float64)
        mask = (mask if mask.ndim == 2 else mask[..., 0]) / 255.0
        return RenderJob(product_id, images.from_png(image_png)[..., :3], mask, prompt, seed)


def keep_product(generated: np.ndarray, job: RenderJob) -> np.ndarray:
    """The product's own pixels composited back exactly where its alpha is > 0."""
    inside = (job.mask > 0)[..., None]
    return np.where(inside, job.rgb, np.clip(np.rint(generated), 0, 255)).astype(np.uint8)


def prompt_style(prompt: str, rng: np.random.Generator) -> np.ndarray:
    """The style codes a prompt names; dimensions it leaves open are drawn from `rng`."""
    style = parse_style(prompt)
    for j, size in enumerate(DIM_SIZES):
        if style[j] < 0:
            style[j] = int(rng.integers(size))
    return style


class ProceduralRenderer:
    """Draws the prompt's style with the simulator's procedural backgrounds (same pixels the simulator
    drew for a creative of that style and seed)."""

    def render(self, jobs: list[RenderJob], progress: bool = False) -> list[np.ndarray]:
        out = []
        for job in tqdm(jobs, desc="render", unit="img", disable=not progress):
            rng = np.random.default_rng(job.seed)
            style = prompt_style(job.prompt, rng)
            bg = images.background(style, job.mask.shape[0], rng)
            # raw.products stores rgb * alpha, so the composite bg * (1 - a) + rgb * a is bg * (1 - a) + stored
            out.append(keep_product(bg * (1 - job.mask[..., None]) + job.rgb, job))
        return out
