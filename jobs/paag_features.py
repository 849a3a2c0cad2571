"""Spark job: frozen-encoder features of titles and creative images, and the PAAG training rows.

    python jobs/paag_features.py                      # MobileNetV2 + MiniLM, last 2 days held out
    python jobs/paag_features.py --image-encoder hf:/models/resnet-50 --text-encoder hf:/models/clip
"""
from __future__ import annotations

import sys

from osmf_core.data.spark import spark_job
from osmf_core.features.encode import FeatureConfig, build_features


def main(argv=None) -> int:
    return spark_job("paag_features", __doc__, FeatureConfig, build_features, argv)


if __name__ == "__main__":
    sys.exit(main())
