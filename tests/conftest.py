"""One local Spark + Delta session for the whole test run, and one tiny simulated world."""
from __future__ import annotations

import pytest

from osmf_core.config import SparkSettings
from osmf_core.simulate import SimulateConfig
from osmf_core.world import WorldSize

TINY = WorldSize(users=1_500, products=42, impressions_per_user=40.0, days=3, image_size=32)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from osmf_core.spark import build_spark
    settings = SparkSettings(master="local[2]", warehouse=str(tmp_path_factory.mktemp("spark_wh")),
                             shuffle_partitions=2, show_progress=False, driver_memory="2g")
    session = build_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_cfg() -> SimulateConfig:
    return SimulateConfig(seed=11, size=TINY, corrupt_fraction=0.02)


@pytest.fixture(scope="session")
def tiny_world(spark, tiny_cfg, tmp_path_factory):
    """A tiny world simulated once (with injected broken rows): (warehouse, SimulateResult)."""
    from osmf_core.simulate import run
    warehouse = str(tmp_path_factory.mktemp("tiny_wh"))
    result = run(spark, tiny_cfg, warehouse)
    return warehouse, result
