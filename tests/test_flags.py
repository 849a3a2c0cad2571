"""Command lines built from the config dataclasses (osmf_core.data.flags): no Spark."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from osmf_core.data.flags import add_config_args, config_from_args, field_comments, job_parser
from osmf_core.grouping.regroup import RegroupConfig
from osmf_core.training.dpo import DPOConfig
from osmf_core.training.gmllm import PretrainConfig
from osmf_core.training.grm import GRMConfig
from osmf_core.training.paag import TrainConfig
from osmf_core.world.simulate import SimulateConfig


@dataclass
class Inner:
    width: int = 8  # how wide


@dataclass
class Example:
    # data
    path: str  # where it is
    # the rows read per call, at most
    batch_size: int = 4
    # model
    inner: Inner = field(default_factory=Inner)
    use_group: bool = field(default=True, metadata={"flag": "group"})  # read the group token
    points: tuple[int, ...] = (15, 55)  # percentile points
    limit: int | None = None  # stop after this many
    mode: str = field(default="a", metadata={"choices": ("a", "b")})  # a or b
    progress: bool = True


def _parse(cls, argv):
    ap = job_parser("doc")
    add_config_args(ap, cls)
    return ap, ap.parse_args(argv)


def test_help_comes_from_the_field_comments_and_groups_from_the_headers():
    comments = field_comments(Example)
    assert comments["path"] == ("where it is", "data")
    assert comments["batch_size"] == ("the rows read per call, at most", "data")
    assert comments["use_group"] == ("read the group token", "model")
    assert comments["progress"] == ("", "model")
    ap, _ = _parse(Example, ["--path", "p"])
    text = ap.format_help()
    assert "where it is" in text and "the rows read per call, at most (default: 4)" in text
    assert [g.title for g in ap._action_groups][-2:] == ["data", "model"]


def test_values_are_typed_and_the_config_is_built_with_its_nested_part():
    _, args = _parse(Example, ["--path", "p", "--batch_size", "9", "--width", "3", "--no-group", "--points", "5,95",
                               "--limit", "7", "--mode", "b", "--no-progress"])
    cfg = config_from_args(Example, args)
    assert cfg == Example(path="p", batch_size=9, inner=Inner(3), use_group=False, points=(5, 95), limit=7,
                          mode="b", progress=False)
    assert config_from_args(Example, _parse(Example, ["--path", "p"])[1]) == Example(path="p")
    assert config_from_args(Example, args, batch_size=1).batch_size == 1  # overrides win


@pytest.mark.parametrize("argv", [[], ["--path", "p", "--mode", "c"], ["--path", "p", "--batch-size", "x"]])
def test_a_missing_required_field_or_a_bad_value_stops_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(Example, argv)
    assert e.value.code == 2


@pytest.mark.parametrize("cls", [RegroupConfig, SimulateConfig, TrainConfig, PretrainConfig, GRMConfig, DPOConfig])
def test_the_jobs_defaults_are_the_configs_defaults(cls):
    """No flag re-declares a default: an empty command line gives the dataclass's own config."""
    assert config_from_args(cls, _parse(cls, [])[1]) == cls()


def test_the_short_names_people_type_still_work():
    assert config_from_args(GRMConfig, _parse(GRMConfig, ["--no-group", "--points", "5"])[1]) == \
        GRMConfig(use_group=False, n_points=5)
    assert config_from_args(DPOConfig, _parse(DPOConfig, ["--no-group", "--deepspeed_config", "x.json"])[1]) == \
        DPOConfig(use_group=False, deepspeed_config="x.json")
    cfg = config_from_args(RegroupConfig, _parse(RegroupConfig, ["--k-range", "3-4", "--percentiles", "15,95"])[1])
    assert (cfg.k_min, cfg.k_max, cfg.percentiles) == (3, 4, (15, 95))
