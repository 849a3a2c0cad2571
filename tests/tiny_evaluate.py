"""`make evaluate` on the tiny test world, in its own process (it starts and stops its own Spark session):
python tests/tiny_evaluate.py OUT [--retrain]. Used by tests/test_evaluate.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REGROUP, TINY, TINY_MODEL  # noqa: E402

from osmf_core.data.config import SparkSettings  # noqa: E402
from osmf_core.evaluation.evaluate import EvaluateConfig, run_evaluate  # noqa: E402
from osmf_core.models.gmllm.model import GMLLMConfig  # noqa: E402
from osmf_core.world.params import V1  # noqa: E402

TINY_GMLLM = GMLLMConfig(image_size=32, patch_size=16, vision_hidden=16, text_hidden=32, text_heads=2,
                         text_intermediate=64, vocab_size=400, group_dim=32, group_points=10, group_hidden=32)


def tiny_config(out: str, retrain: bool = False) -> EvaluateConfig:
    return EvaluateConfig(
        worlds=(11,), seeds=(0, 1), size=TINY, params=V1, encoders="tiny", paag_steps=30, gmllm_steps=6, grm_steps=3,
        dpo_rounds=1, out_dir=f"{out}/runs", report=f"{out}/evaluate.json", page=f"{out}/results.md", retrain=retrain,
        overrides={"features": {"example_files": 3}, "paag": {"model": TINY_MODEL, "batch_size": 256},
                   "regroup": REGROUP, "curation": {"window_days": 3, "test_share": 0.3, "pair_min_exposure": 10},
                   "pretrain": {"model": TINY_GMLLM, "batch_size": 8, "max_len": 160}, "grm": {"batch_size": 8},
                   "dpo": {"samples": 3, "max_contexts": 6, "batch_size": 2, "epochs": 1, "max_new_tokens": 12,
                           "max_len": 400}})


if __name__ == "__main__":
    run_evaluate(tiny_config(sys.argv[1], "--retrain" in sys.argv),
                 SparkSettings(master="local[2]", shuffle_partitions=2, show_progress=False, driver_memory="2g",
                               warehouse=f"{sys.argv[1]}/spark"))
