"""Experiment configs: load an ml_collections config file and apply `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections

from jaxvision.fileio import write_atomic


class ConfigError(ValueError):
    """A user error in a config file or a command-line override."""


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports `path` (a Python file with `get_config()`) and returns its ConfigDict."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location("_jaxvision_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is a user error: name it
        raise ConfigError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path} must return an ml_collections.ConfigDict")
    return config


def _parse_value(key: str, text: str, current: Any) -> Any:
    """Parses `text` into the type of the current value of `key`."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key '{key}' expects a bool, got '{text}'")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects an int, got '{text}'") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects a float, got '{text}'") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ConfigError(f"config key '{key}' holds a {type(current).__name__}; it cannot be set from the command line")


def _known_keys(config: ml_collections.ConfigDict) -> list[str]:
    return sorted(config.keys())


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Sets `config.<dotted_key>` from its command-line text, checking the key and the type."""
    parts = dotted_key.split(".")
    node = config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth]) or "<top level>"
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = ", ".join(_known_keys(node)) if isinstance(node, ml_collections.ConfigDict) else "none"
            raise ConfigError(f"unknown config key '{dotted_key}' ('{part}' is not in {prefix}; known: {known})")
        if depth < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"config key '{dotted_key}' is a group; set one of its fields: {', '.join(_known_keys(current))}")
    value = _parse_value(dotted_key, text, current)
    try:
        node[parts[-1]] = value
    except TypeError as e:
        raise ConfigError(f"config key '{dotted_key}': {e}") from None


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """Turns ['--config.a.b=1', '--config.c', '2'] into [('a.b', '1'), ('c', '2')]."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unrecognised argument '{arg}' (overrides look like --config.train.num_steps=100)")
        body = arg[len("--config."):]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(args):
            key, value = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override '{arg}' has no value")
        pairs.append((key, value))
        i += 1
    return pairs


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file and applies command-line overrides; the result is locked against new keys."""
    config = load_config_file(path)
    for key, value in parse_overrides(overrides):
        apply_override(config, key, value)
    config.lock()
    return config


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
    """Writes the config as JSON (atomically) so eval/export can rebuild the run."""
    write_atomic(path, config.to_json(indent=2, sort_keys=True))


def config_from_json(path: str) -> ml_collections.ConfigDict:
    """Reads a config written by `save_config`."""
    if not os.path.isfile(path):
        raise ConfigError(f"no config.json in {os.path.dirname(path) or '.'}: is this a jaxvision workdir?")
    with open(path) as f:
        data = json.load(f)
    return ml_collections.ConfigDict(_tuples(data))


def _tuples(value):
    """JSON turns tuples into lists; configs use tuples for fixed sequences."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
