"""One prompt and one image per (product, group): gen.prompts, gen.creatives, image files and the gallery.

    python jobs/generate.py                                  # Group-DPO policy of runs/dpo, procedural renderer
    python jobs/generate.py --dpo '' --products 10           # the pre-trained G-MLLM, first 10 products
    python jobs/generate.py --prompt "the product, cozy kitchen background, warm palette"   # one prompt for all
    python jobs/generate.py --renderer inpaint --sd-path DIR --controlnet-path DIR   # Stable Diffusion on a GPU node
Open reports/gallery/index.html in a browser: rows are products, columns groups.
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import spark_job
from osmf_core.evaluation.online import simulated_ctr
from osmf_core.generation.pipeline import GenerateConfig, generate_creatives


def generate(spark, cfg: GenerateConfig, warehouse: str) -> dict:
    """On a simulated world, each image is also scored by its simulated CTR in its group."""
    return generate_creatives(spark, cfg, warehouse, simulated_ctr=simulated_ctr(warehouse))


def main(argv=None) -> int:
    return spark_job("generate", __doc__, GenerateConfig, generate, argv)


if __name__ == "__main__":
    sys.exit(main())
