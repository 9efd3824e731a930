"""Configuration: defaults, YAML + overrides, and one-line errors naming the field."""

from __future__ import annotations

import pytest

from smoother.config import LossConfig, SmootherConfig, TrainConfig
from steadydepth.config import Config, load_config, parse_override
from steadydepth.errors import ConfigError


def test_defaults_validate_and_hash_is_stable():
    a, b = load_config(), Config()
    assert a == b
    assert a.section_hash("decode", "teacher") == b.section_hash("decode", "teacher")
    assert a.section_hash("decode") != load_config(overrides=["decode.stride=2"]).section_hash("decode")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("decode:\n  stride: 3\n  long_edge: 320\nteacher:\n  backend: synthetic\n")
    cfg = load_config(path, ["decode.stride=2", "store.chunk_frames=8", "decode.intrinsics={hfov_deg: 60}"])
    assert cfg.decode.stride == 2  # the command line wins over the file
    assert cfg.decode.long_edge == 320
    assert cfg.teacher.backend == "synthetic"
    assert cfg.store.chunk_frames == 8
    assert cfg.decode.intrinsics.hfov_deg == 60


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("decode.stride=0", "decode.stride"),
        ("decode.strid=2", "decode.strid"),
        ("teacher.backend=magic", "teacher.backend"),
        ("teacher.resolution_level=12", "teacher.resolution_level"),
        ("store.chunk_frames=-1", "store.chunk_frames"),
        ("decode.intrinsics={fx: 500}", "decode.intrinsics"),
    ],
)
def test_invalid_value_names_the_field_in_one_line(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert field in message
    assert "\n" not in message
    assert "--set" in message  # says what to do


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
    with pytest.raises(ConfigError, match="SECTION.FIELD=VALUE"):
        parse_override("decode.stride")
    assert parse_override("store.root=s3://bucket/x") == ("store.root", "s3://bucket/x")
    assert parse_override("decode.max_frames=null") == ("decode.max_frames", None)


def test_the_smoother_sections_come_from_the_smoother_package():
    """smoother/config.py owns the smoother, train and loss sections; Config composes them under the same paths."""
    cfg = load_config(overrides=["smoother.d_model=24", "train.steps=3", "loss.anchor=0.5"])
    assert isinstance(cfg.smoother, SmootherConfig) and isinstance(cfg.train, TrainConfig)
    assert isinstance(cfg.loss, LossConfig)
    assert (cfg.smoother.d_model, cfg.train.steps, cfg.loss.anchor) == (24, 3, 0.5)
    with pytest.raises(ConfigError, match="smoother.d_modl"):
        load_config(overrides=["smoother.d_modl=24"])
