"""Schedules and optimizers against hand-computed values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvision.config import ConfigError
from jaxvision.train.optim import decay_mask, make_optimizer, make_schedule


def schedule_config(**kw):
    base = dict(name="constant", warmup_steps=0, power=0.9, step_every=10, decay_factor=0.5, end_lr_fraction=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_poly_schedule():
    s = make_schedule(schedule_config(name="poly"), 0.1, 100)
    assert np.isclose(s(0), 0.1)
    assert np.isclose(s(50), 0.1 * 0.5 ** 0.9)
    assert np.isclose(s(100), 0.0)


def test_warmup_then_linear_decay():
    s = make_schedule(schedule_config(name="warmup_linear", warmup_steps=10), 1.0, 110)
    assert np.isclose(s(0), 0.0) and np.isclose(s(5), 0.5) and np.isclose(s(10), 1.0)
    assert np.isclose(s(60), 0.5) and np.isclose(s(110), 0.0)


def test_step_schedule_halves():
    s = make_schedule(schedule_config(name="step", step_every=10, decay_factor=0.5), 0.2, 100)
    assert [float(s(i)) for i in (0, 9, 10, 25)] == pytest.approx([0.2, 0.2, 0.1, 0.05])


def test_cosine_schedule():
    s = make_schedule(schedule_config(name="cosine"), 1.0, 100)
    assert np.isclose(s(50), 0.5) and np.isclose(s(100), 0.0)


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="schedule.name 'foo'"):
        make_schedule(schedule_config(name="foo"), 1.0, 10)


def opt_config(**kw):
    opt = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
               weight_decay_mask="kernels", clip_grad_norm=0.0)
    opt.update(kw)
    return ml_collections.ConfigDict(dict(optimizer=opt, schedule=schedule_config()))


def run(config, params, grads, steps):
    tx, _ = make_optimizer(config, 100)
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_sgd_momentum_by_hand():
    p = run(opt_config(), {"w": jnp.array([1.0])}, {"w": jnp.array([1.0])}, 2)
    # v1 = 1, p1 = 1 - 0.1; v2 = 0.9 + 1 = 1.9, p2 = 0.9 - 0.19
    assert np.allclose(p["w"], 0.71)


def test_adam_first_step_is_lr_times_sign():
    p = run(opt_config(name="adam", lr=0.01), {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, -0.5])}, 1)
    assert np.allclose(p["w"], [1.0 - 0.01, -2.0 + 0.01], atol=1e-6)


def test_adamw_decoupled_decay_skips_biases():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    p = run(opt_config(name="adamw", lr=0.1, weight_decay=0.5), params, zero, 1)
    # zero gradient: only decay acts, lr * wd * theta on kernels, nothing on biases
    assert np.allclose(p["kernel"], 1.0 - 0.1 * 0.5) and np.allclose(p["bias"], 1.0)
    assert decay_mask(params, "all") == {"kernel": True, "bias": True}


def test_clipping_caps_global_norm():
    p = run(opt_config(momentum=0.0, clip_grad_norm=1.0), {"w": jnp.zeros(2)}, {"w": jnp.array([3.0, 4.0])}, 1)
    assert np.allclose(p["w"], [-0.06, -0.08])
