"""Optimizers and learning-rate schedules of the seeds, built from optax and a config."""

from __future__ import annotations

import jax
import optax

from jaxvision.config import ConfigError
from jaxvision.train import swa

SCHEDULES = ("constant", "poly", "warmup_linear", "step", "cosine", "swa")
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_schedule(schedule_config, lr: float, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step: optional linear warm-up, then the named decay."""
    name = schedule_config.name
    warmup = int(schedule_config.warmup_steps)
    end_lr = lr * schedule_config.end_lr_fraction
    decay_steps = max(total_steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "poly":
        main = optax.polynomial_schedule(lr, end_lr, schedule_config.power, decay_steps)
    elif name == "warmup_linear":
        main = optax.linear_schedule(lr, end_lr, decay_steps)
    elif name == "step":
        main = optax.exponential_decay(lr, schedule_config.step_every, schedule_config.decay_factor, staircase=True)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=schedule_config.end_lr_fraction)
    elif name == "swa":  # constant, then linear to end_lr from swa_start_step over swa_decay_steps (Fig. 2.16)
        main = swa.swa_schedule(lr, end_lr, decay_steps, int(schedule_config.swa_start_step) - warmup,
                                int(schedule_config.swa_decay_steps))
    else:
        raise ConfigError(f"schedule.name '{name}' is unknown; choose one of {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(params, mode: str):
    """True for the leaves that get weight decay: 'kernels' skips biases and norm scales (ndim < 2)."""
    if mode == "all":
        return jax.tree.map(lambda _: True, params)
    if mode == "kernels":
        return jax.tree.map(lambda p: p.ndim >= 2, params)
    raise ConfigError(f"optimizer.weight_decay_mask '{mode}' is unknown; choose 'kernels' or 'all'")


def make_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer of `config.optimizer` with `config.schedule`, clipping and weight decay."""
    opt = config.optimizer
    schedule = make_schedule(config.schedule, opt.lr, total_steps)
    mask = lambda params: decay_mask(params, opt.weight_decay_mask)  # noqa: E731
    chain = []
    if opt.clip_grad_norm > 0:
        chain.append(optax.clip_by_global_norm(opt.clip_grad_norm))
    if opt.name == "sgd":
        if opt.weight_decay > 0:
            chain.append(optax.add_decayed_weights(opt.weight_decay, mask))
        chain.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    elif opt.name == "adam":
        if opt.weight_decay > 0:
            chain.append(optax.add_decayed_weights(opt.weight_decay, mask))
        chain.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    elif opt.name == "adamw":
        chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask))
    else:
        raise ConfigError(f"optimizer.name '{opt.name}' is unknown; choose one of {', '.join(OPTIMIZERS)}")
    if swa.enabled(config):  # keeps the weight average in the optimizer state
        chain.append(swa.averaging(int(config.swa.start_step), int(config.swa.every)))
    return optax.chain(*chain), schedule
