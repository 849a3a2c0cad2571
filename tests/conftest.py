"""One local Spark + Delta session for the whole test run, one tiny simulated world, and a scan of the operators
that would read a GPU tensor back."""
from __future__ import annotations

from pathlib import Path

import pytest

from osmf_core.data.config import SparkSettings
from osmf_core.models.paag import PAAGConfig
from osmf_core.world.simulate import SimulateConfig
from osmf_core.world.model import WorldSize
from osmf_core.world.params import V1

TINY_MODEL = PAAGConfig(d=32, attr_dim=4, heads=2, text_dim=32, image_dim=16, dropout=0.1)
TINY = WorldSize(users=1_500, products=42, impressions_per_user=40.0, days=3, image_size=32)
# regroup settings scaled to the tiny world
REGROUP = dict(min_users=60, min_group_size=20, point_users=5, exact_max=400, sample_size=300, rows_per_call=20_000,
               min_exposure=5, pair_min_exposure=10, pair_ctr_ratio=1.25, window_days=3)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from osmf_core.data.spark import build_spark
    settings = SparkSettings(master="local[2]", warehouse=str(tmp_path_factory.mktemp("spark_wh")),
                             shuffle_partitions=2, show_progress=False, driver_memory="2g")
    session = build_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_cfg() -> SimulateConfig:
    # the v1 preset: a tiny world needs its strong style signal for the models to learn anything in a few steps
    return SimulateConfig(seed=11, size=TINY, params=V1, corrupt_fraction=0.02)


@pytest.fixture(scope="session")
def tiny_world(spark, tiny_cfg, tmp_path_factory):
    """A tiny world simulated once (with injected broken rows): (warehouse, SimulateResult)."""
    from osmf_core.world.simulate import simulate_world
    warehouse = str(tmp_path_factory.mktemp("tiny_wh"))
    result = simulate_world(spark, tiny_cfg, warehouse)
    return warehouse, result


@pytest.fixture(scope="session")
def paag_wh(spark, tiny_world):
    """The tiny world with encoder features and PAAG examples (tiny encoders)."""
    from osmf_core.features.encode import FeatureConfig
    from osmf_core.features.encode import build_features as make_features
    wh, _ = tiny_world
    make_features(spark, FeatureConfig(image_encoder="tiny", text_encoder="tiny", example_files=3), wh,
                  log=lambda *_: None)
    return wh


@pytest.fixture(scope="session")
def paag_model(paag_wh, tmp_path_factory):
    """A tiny PAAG trained for a few steps on the tiny world: path of its model.pt."""
    from osmf_core.training.paag import MODEL_FILE, TrainConfig, train
    out = tmp_path_factory.mktemp("paag_model")
    train(TrainConfig(warehouse=paag_wh, text_encoder="tiny", image_encoder="tiny", model=TINY_MODEL,
                      max_steps=30, batch_size=256, out_dir=str(out), progress=False))
    return str(out / MODEL_FILE)


@pytest.fixture(scope="session")
def gaip_wh(spark, paag_wh, paag_model):
    """The tiny world regrouped once: (warehouse, RegroupConfig, summary)."""
    from osmf_core.grouping.regroup import RegroupConfig, regroup
    cfg = RegroupConfig(model=paag_model, **REGROUP)
    summary = regroup(spark, cfg, paag_wh, log=lambda *_: None)
    return paag_wh, cfg, summary


@pytest.fixture(scope="session")
def instructions_wh(spark, gaip_wh):
    """feat.instructions and feat.grm_examples built from the tiny world's groups: (warehouse, summary)."""
    from osmf_core.features.instructions import CurationConfig, build_instructions
    wh = gaip_wh[0]
    return wh, build_instructions(spark, CurationConfig(window_days=3, test_share=0.3, pair_min_exposure=10), wh,
                                  log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_models(instructions_wh, tmp_path_factory):
    """A tiny G-MLLM pre-trained for a few steps and a GRM trained from it, on the tiny world:
    (warehouse, gmllm dir, grm dir)."""
    from osmf_core.models.gmllm.model import GMLLMConfig
    from osmf_core.training.gmllm import MODEL_SUBDIR, PretrainConfig, pretrain
    from osmf_core.training.grm import GRMConfig, train_grm
    wh, _ = instructions_wh
    out = tmp_path_factory.mktemp("tiny_models")
    model = GMLLMConfig(image_size=32, patch_size=16, vision_hidden=16, text_hidden=32, text_heads=2,
                        text_intermediate=64, vocab_size=400, group_dim=32, group_points=10, group_hidden=32)
    pretrain(PretrainConfig(warehouse=wh, model=model, batch_size=8, max_len=160, max_steps=6, out_dir=str(out / "gm"),
                            progress=False))
    train_grm(GRMConfig(warehouse=wh, gmllm=str(out / "gm" / MODEL_SUBDIR), out_dir=str(out / "grm"), max_steps=3,
                        batch_size=8, progress=False))
    return wh, str(out / "gm" / MODEL_SUBDIR), str(out / "grm" / MODEL_SUBDIR)


FAULTS: dict = {"regroup_kills": [], "loads": []}


@pytest.fixture(scope="session")
def fault_log():
    """Faults injected by the tests (killed regroup runs, loads of bad rows) and what they cost; written to
    reports/faults.json when the session ends."""
    yield FAULTS
    from osmf_core.data.reports import write_report
    kills, loads = FAULTS["regroup_kills"], FAULTS["loads"]
    if not kills and not loads:
        return
    write_report(Path(__file__).resolve().parent.parent / "reports" / "faults.json", {
        "injected": len(kills), "runs_recovered": sum(r["recovered"] for r in kills),
        "rows_lost": sum(r["rows_lost"] for r in kills) + sum(r.get("rows_lost", 0) for r in loads),
        "duplicates": sum(r["duplicates"] for r in kills),
        "loads": len(loads), "rows_tried": sum(r["rows_in"] for r in loads),
        "bad_rows_tried": sum(r["rejected"] for r in loads), "rows_accepted": sum(r["accepted"] for r in loads),
        "faults": kills, "load_runs": loads})


# operators that read a GPU tensor back to the CPU (their output's size or a value), and composite ones that call
# one inside their CUDA kernel, where a dispatch mode on the CPU does not see the inner call
READ_BACK = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "equal", "allclose",
             "unique", "_unique2", "unique_consecutive", "repeat_interleave", "tolist",
             "masked_scatter_backward"}  # grad.masked_select(mask): the gradient of masked_scatter's source
INDEXED = {"index", "index_put", "index_put_", "_index_put_impl_"}  # with a boolean index: a nonzero inside


def reads_back(func, args) -> bool:
    import torch
    name = func.__name__.split(".")[0]
    if name in INDEXED:  # a boolean index is a nonzero; integer indices are read on the device
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for a in args if isinstance(a, (list, tuple))
                   for i in a)
    return name in READ_BACK


@pytest.fixture
def device_reads():
    """A dispatch mode (a context manager) whose `seen` lists the operators run inside it that would read a GPU
    tensor back: on a GPU each is a wait of the CPU for the device. It runs on the CPU; a copy from pageable
    memory, which waits too, reads nothing there and is not seen."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if reads_back(func, args):
                self.seen.append(func.__name__)
            return func(*args, **(kwargs or {}))
    return Reads
