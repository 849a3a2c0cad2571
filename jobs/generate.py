"""One prompt and one image per (product, group): gen.prompts, gen.creatives, image files and the gallery.

    python jobs/generate.py                                  # Group-DPO policy of runs/dpo, procedural renderer
    python jobs/generate.py --dpo '' --products 10           # the pre-trained G-MLLM, first 10 products
    python jobs/generate.py --prompt "the product, cozy kitchen background, warm palette"   # one prompt for all
    python jobs/generate.py --renderer inpaint --sd-path DIR --controlnet-path DIR   # Stable Diffusion on a GPU node
Open reports/gallery/index.html in a browser: rows are products, columns groups.
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data.config import add_spark_args
from osmf_core.evaluation.online import simulated_ctr
from osmf_core.generation.pipeline import GenerateConfig, run
from osmf_core.data.spark import run_job

FIELDS = ("run_date", "gmllm", "dpo", "grm", "renderer", "sd_path", "controlnet_path", "prompt", "images_dir",
          "gallery")


def main(argv=None) -> int:
    d = GenerateConfig.__dataclass_fields__
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in FIELDS:
        ap.add_argument(f"--{name.replace('_', '-')}", default=d[name].default)
    ap.add_argument("--products", type=int, default=0, help="only the first N products (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary-json", help="also write the summary to this file")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("generate", args, lambda a: GenerateConfig(
        **{k: getattr(a, k) for k in FIELDS}, products=a.products, seed=a.seed),
        lambda spark, cfg, wh: run(spark, cfg, wh, simulated_ctr=simulated_ctr(wh)))


if __name__ == "__main__":
    sys.exit(main())
