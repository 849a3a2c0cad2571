"""Spark job: frozen-encoder features of titles and creative images, and the PAAG training rows.

    python jobs/paag_features.py                      # MobileNetV2 + MiniLM, last 2 days held out
    python jobs/paag_features.py --image-encoder hf:/models/resnet-50 --text-encoder hf:/models/clip
"""
from __future__ import annotations

import argparse
import sys

from osmf_core.config import add_spark_args, spark_settings
from osmf_core.features import FeatureConfig, run
from osmf_core.spark import build_spark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FeatureConfig()
    ap.add_argument("--image-encoder", default=d.image_encoder)
    ap.add_argument("--text-encoder", default=d.text_encoder)
    ap.add_argument("--test-days", type=int, default=d.test_days)
    ap.add_argument("--example-files", type=int, default=d.example_files)
    add_spark_args(ap)
    args = ap.parse_args(argv)
    cfg = FeatureConfig(image_encoder=args.image_encoder, text_encoder=args.text_encoder,
                        test_days=args.test_days, example_files=args.example_files)
    settings = spark_settings(args)
    spark = build_spark(settings)
    run(spark, cfg, settings.warehouse)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
