"""Spark job: frozen-encoder features of titles and creative images, and the PAAG training rows.

    python jobs/paag_features.py                      # MobileNetV2 + MiniLM, last 2 days held out
    python jobs/paag_features.py --image-encoder hf:/models/resnet-50 --text-encoder hf:/models/clip
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.data.config import add_spark_args
from osmf_core.features.encode import FeatureConfig, run
from osmf_core.data.spark import run_job


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FeatureConfig()
    ap.add_argument("--image-encoder", default=d.image_encoder)
    ap.add_argument("--text-encoder", default=d.text_encoder)
    ap.add_argument("--test-days", type=int, default=d.test_days)
    ap.add_argument("--example-files", type=int, default=d.example_files)
    add_spark_args(ap)
    args = ap.parse_args(argv)
    return run_job("paag_features", args, lambda a: FeatureConfig(
        image_encoder=a.image_encoder, text_encoder=a.text_encoder, test_days=a.test_days,
        example_files=a.example_files), run)


if __name__ == "__main__":
    sys.exit(main())
