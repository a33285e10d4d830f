"""The jitted train step: gradient accumulation and the non-finite guard, on a tiny linear model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxvision.train.state import create_train_state, make_train_step


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return {"y": nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]}


def mse(outputs, batch):
    loss = jnp.mean((outputs["y"] - batch["target"]) ** 2)
    return loss, {"mse": loss}


def make_state(lr=0.1):
    return create_train_state(Linear(), optax.sgd(lr), jax.random.PRNGKey(0), (1, 2, 2, 1))


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(n, 2, 2, 1)), jnp.float32),
            "target": jnp.asarray(rng.normal(size=(n,)), jnp.float32)}


def test_sgd_step_matches_hand_gradient():
    state, data = make_state(), batch()
    new_state, metrics = jax.jit(make_train_step(mse))(state, data)
    x = np.asarray(data["image"]).reshape(8, 4)
    w, b = np.asarray(state.params["Dense_0"]["kernel"])[:, 0], float(state.params["Dense_0"]["bias"][0])
    residual = x @ w + b - np.asarray(data["target"])
    grad_w, grad_b = 2 * x.T @ residual / 8, 2 * residual.mean()
    np.testing.assert_allclose(new_state.params["Dense_0"]["kernel"][:, 0], w - 0.1 * grad_w, rtol=1e-5)
    np.testing.assert_allclose(new_state.params["Dense_0"]["bias"][0], b - 0.1 * grad_b, rtol=1e-5)
    assert int(new_state.step) == 1 and int(metrics["nonfinite"]) == 0
    np.testing.assert_allclose(metrics["loss"], np.mean(residual ** 2), rtol=1e-5)


def test_gradient_accumulation_equals_full_batch():
    state, data = make_state(), batch()
    full, _ = jax.jit(make_train_step(mse))(state, data)
    accumulated, metrics = jax.jit(make_train_step(mse, grad_accum_steps=4))(state, data)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(accumulated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(accumulated.step) == 1


def test_non_finite_loss_leaves_the_state_unchanged():
    state, data = make_state(), batch()
    data["target"] = data["target"].at[3].set(jnp.nan)
    new_state, metrics = jax.jit(make_train_step(mse))(state, data)
    assert int(metrics["nonfinite"]) == 1
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)):
        np.testing.assert_array_equal(a, b)
