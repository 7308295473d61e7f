"""Tests for jepa_jax.configs (tiny config files written to tmp_path)."""

import textwrap

import pytest

from jepa_jax.configs import ConfigError, load_config

CONFIG = """
import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 32
    c.model.widths = (64, 64)
    c.model.act = "gelu"
    c.train = ml_collections.ConfigDict()
    c.train.lr = 3e-4
    c.train.steps = 1000
    c.train.use_ema = False
    c.train.seed = config_dict.placeholder(int)
    if arg == "small":
        c.model.latent_dim = 8
    elif arg is not None:
        raise ValueError(f"unknown preset {arg!r}")
    return c
"""


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG)
    return path


def test_defaults_and_preset(cfg_file):
    assert load_config(str(cfg_file)).model.latent_dim == 32
    assert load_config(f"{cfg_file}:small").model.latent_dim == 8
    with pytest.raises(ConfigError, match="get_config\\('big'\\) in .* failed: ValueError"):
        load_config(f"{cfg_file}:big")


def test_typed_overrides(cfg_file):
    config = load_config(
        str(cfg_file),
        [
            "--config.train.lr=1e-3",
            "config.train.steps=2e3",
            "--config.train.use_ema=true",
            "--config.model.act",
            "relu",
            "--config.model.widths=32,16",
            "--config.train.seed=7",
        ],
    )
    assert config.train.lr == 1e-3 and isinstance(config.train.lr, float)
    assert config.train.steps == 2000 and isinstance(config.train.steps, int)
    assert config.train.use_ema is True
    assert config.model.act == "relu"
    assert config.model.widths == (32, 16)
    assert config.train.seed == 7
    assert load_config(str(cfg_file), ["--config.train.lr=1"]).train.lr == 1.0
    assert load_config(str(cfg_file), ["--config.train.use_ema"]).train.use_ema is True


def test_unknown_key_and_bad_values(cfg_file):
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_file), ["--config.train.lrr=1"])
    assert str(err.value) == (
        "unknown config key config.train.lrr (valid keys of config.train: lr, seed, steps, use_ema)"
    )
    with pytest.raises(ConfigError, match="'abc' is not a float"):
        load_config(str(cfg_file), ["--config.train.lr=abc"])
    with pytest.raises(ConfigError, match="'1.5' is not a int"):
        load_config(str(cfg_file), ["--config.train.steps=1.5"])
    with pytest.raises(ConfigError, match="'maybe' is not a bool"):
        load_config(str(cfg_file), ["--config.train.use_ema=maybe"])
    with pytest.raises(ConfigError, match="config.model is a section"):
        load_config(str(cfg_file), ["--config.model=1"])
    with pytest.raises(ConfigError, match="unrecognized argument '--lr=1'"):
        load_config(str(cfg_file), ["--lr=1"])


def test_locked(cfg_file):
    config = load_config(str(cfg_file))
    with pytest.raises(AttributeError):
        config.train.lrr = 1.0


def test_missing_file_and_get_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.py"):
        load_config(str(tmp_path / "nope.py:small"))
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("X = 1\n"))
    with pytest.raises(ConfigError, match="does not define get_config"):
        load_config(str(bad))
