"""Model registry: names -> factories, built from keyword arguments or an ml_collections config."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

_REGISTRY: dict[str, Callable] = {}
# Flax Module constructor arguments that are not model options.
_INTERNAL_ARGS = frozenset({"parent", "name"})


def register(name: str, **fixed: Any) -> Callable:
    """Decorator registering a model factory (a Module class or a function) under `name`.

    `fixed` keyword arguments are bound for this name, e.g. `@register("resnet18", depth=18)`;
    returns the decorated object unchanged, so several names can share one class.
    """

    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = functools.partial(factory, **fixed) if fixed else factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> list[str]:
    """The keyword arguments model `name` accepts (fixed ones excluded)."""
    factory = _factory(name)
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    params = inspect.signature(factory).parameters
    return sorted(p for p in params if p not in _INTERNAL_ARGS and p not in fixed
                  and params[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


def create(name: str, /, **kwargs: Any):
    """Builds model `name`; ValueError for an unknown name, TypeError for an unknown argument.

    Inside a parent Module, `name=` in `kwargs` names the Flax submodule.
    """
    options = model_options(name)
    unknown = sorted(set(kwargs) - set(options) - {"name"})
    if unknown:
        raise TypeError(f"model '{name}' has no option(s) {', '.join(repr(k) for k in unknown)}; "
                        f"accepted: {', '.join(options)}")
    return _factory(name)(**kwargs)


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or shapes (e.g. a model's params, concrete or from eval_shape)."""
    import jax
    import numpy as np
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(tree))


def _to_tuples(value: Any) -> Any:
    """Lists (e.g. from a command-line override) -> tuples, recursively, so Module fields stay hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuples(v) for v in value)
    return value


def create_from_config(model_config, **overrides: Any):
    """Builds the model of a ConfigDict holding `name` plus constructor fields; `overrides` win.

    Raises ValueError naming the field for a missing `name` or a field the model does not take.
    """
    fields = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    if "name" not in fields:
        raise ValueError("model config has no 'name' field; available models: " + ", ".join(list_models()))
    name = fields.pop("name")
    fields.update(overrides)
    options = model_options(name)
    for field in sorted(fields):
        if field not in options:
            raise ValueError(f"model config field 'model.{field}' is not an option of model '{name}'; "
                             f"accepted: {', '.join(options)}")
    return create(name, **{k: _to_tuples(v) for k, v in fields.items()})


def options_from_args(name: str, args: Sequence[str]) -> dict[str, Any]:
    """Model options of `name` from command-line `['--model.num_classes=10', ...]`, typed like their defaults.

    ConfigError (a usage error) for an unknown model, a malformed argument or an unknown option.
    """
    import ml_collections  # noqa: PLC0415
    from jaxvision.config import ConfigError, apply_override  # noqa: PLC0415

    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    options = model_options(name)
    parsed = ml_collections.ConfigDict()
    defaults = None
    for arg in args:
        key, sep, text = arg.removeprefix("--model.").partition("=")
        if not arg.startswith("--model.") or not sep:
            raise ConfigError(f"unrecognised argument '{arg}' (model options look like --model.num_classes=10)")
        if key not in options:
            raise ConfigError(f"model '{name}' has no option '{key}'; accepted: {', '.join(options)}")
        defaults = defaults or create(name)
        parsed[key] = getattr(defaults, key)
        apply_override(parsed, key, text)  # parses `text` into the type of the default
    return {key: _to_tuples(value) for key, value in parsed.to_dict().items()}
