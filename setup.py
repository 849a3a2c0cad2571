"""OSMF: advertising images generated per user group ("One Size, Many Fits").

The one place that pins versions is requirements.lock (installed with --no-deps by `make setup`).
This file packages osmf_core for a cluster: install the lock with --no-deps on the nodes, then
`pip install --no-deps .` (or ship a wheel with spark-submit --py-files).
"""
from pathlib import Path

from setuptools import find_packages, setup

DIRECT = ("pyspark", "delta-spark", "petastorm", "pyarrow", "numpy", "pandas", "torch", "transformers",
          "diffusers", "deepspeed", "scikit-learn", "peft", "deltalake", "pillow", "pyyaml", "tqdm")
lock = (Path(__file__).parent / "requirements.lock").read_text().split()
pins = [line for line in lock if line.split("==")[0].lower() in DIRECT]

setup(
    name="osmf",
    version="0.1.0",
    description="Group-wise advertising image generation: Spark + Delta data jobs, DeepSpeed training",
    packages=find_packages(include=["osmf_core", "osmf_core.*"]),
    python_requires="==3.11.*",
    install_requires=pins,
)
