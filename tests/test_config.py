"""Config loading and command-line overrides."""

import os

import pytest

from jaxvision.config import ConfigError, config_from_json, load_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")


def test_overrides_are_typed():
    config = load_config(CONFIG, ["--config.train.num_steps=7", "--config.optimizer.lr", "0.5",
                                  "--config.data.augment.flip=false", "--config.model.encoder=resnet50",
                                  "--config.model.aspp_rates=(3,6,9)"])
    assert config.train.num_steps == 7 and isinstance(config.train.num_steps, int)
    assert config.optimizer.lr == 0.5
    assert config.data.augment.flip is False
    assert config.model.encoder == "resnet50"
    assert tuple(config.model.aspp_rates) == (3, 6, 9)


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_stepz=3", "unknown config key 'train.num_stepz'"),
    ("--config.nothere.x=3", "unknown config key 'nothere.x'"),
    ("--config.train.num_steps=abc", "config key 'train.num_steps' expects an int, got 'abc'"),
    ("--config.data.augment.flip=maybe", "expects a bool"),
    ("--config.train=3", "is a group"),
    ("--train.num_steps=3", "unrecognised argument"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CONFIG, [override])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: /no/such/config.py"):
        load_config("/no/such/config.py")


def test_json_roundtrip(tmp_path):
    config = load_config(CONFIG, ["--config.train.num_steps=11"])
    path = str(tmp_path / "config.json")
    save_config(config, path)
    again = config_from_json(path)
    assert again.train.num_steps == 11
    assert again.model.tasks == config.model.tasks
    assert again.data.augment.scale_range == tuple(config.data.augment.scale_range)
    assert os.listdir(tmp_path) == ["config.json"]
