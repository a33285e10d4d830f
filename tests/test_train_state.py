"""The jitted train step: gradient accumulation, the non-finite guard and a task's learnable loss
parameters, on a tiny linear model; uncertainty weighting through the real CLI."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import pytest

from jaxvision.train.state import LOSS_PARAMS, create_train_state, make_train_step


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


def weighted_mse(outputs, batch, loss_params):
    """exp(-s) * mse + s: a learnable loss parameter s like uncertainty weighting's."""
    s = loss_params["s"]
    mse_value = jnp.mean((outputs["y"] - batch["target"]) ** 2)
    return jnp.exp(-s) * mse_value + s, {"mse": mse_value}


def test_loss_params_are_trained_with_the_model_and_kept_out_of_its_variables():
    s0 = 0.5
    state = create_train_state(Linear(), optax.sgd(0.1), jax.random.PRNGKey(0), (1, 2, 2, 1),
                               loss_params={"s": jnp.float32(s0)})
    assert set(state.params) == {"Dense_0", LOSS_PARAMS} and set(state.variables()["params"]) == {"Dense_0"}
    data = batch()
    new_state, metrics = jax.jit(make_train_step(weighted_mse))(state, data)
    x = np.asarray(data["image"]).reshape(8, 4)
    w, b = np.asarray(state.params["Dense_0"]["kernel"])[:, 0], float(state.params["Dense_0"]["bias"][0])
    residual = x @ w + b - np.asarray(data["target"])
    mse_value = np.mean(residual ** 2)
    # d/ds = 1 - exp(-s) mse; the model's gradient is scaled by exp(-s)
    np.testing.assert_allclose(new_state.params[LOSS_PARAMS]["s"], s0 - 0.1 * (1 - math.exp(-s0) * mse_value),
                               rtol=1e-5)
    np.testing.assert_allclose(new_state.params["Dense_0"]["bias"][0],
                               b - 0.1 * math.exp(-s0) * 2 * residual.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["mse"], mse_value, rtol=1e-5)
    accumulated, _ = jax.jit(make_train_step(weighted_mse, grad_accum_steps=2))(state, data)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(accumulated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert new_state.apply_fn(new_state.variables(), data["image"], train=False)["y"].shape == (8,)


def test_a_model_group_named_like_the_loss_params_is_refused():
    class Clash(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            return {"y": nn.Dense(1, name=LOSS_PARAMS)(x.reshape(x.shape[0], -1))[:, 0]}

    with pytest.raises(ValueError, match="reserved for the task's loss parameters"):
        create_train_state(Clash(), optax.sgd(0.1), jax.random.PRNGKey(0), (1, 2, 2, 1), loss_params={"s": 0.0})
    assert LOSS_PARAMS in create_train_state(Clash(), optax.sgd(0.1), jax.random.PRNGKey(0), (1, 2, 2, 1)).params


def test_uncertainty_weighting_trains_checkpoints_and_resumes_the_log_variances(tmp_path, capsys):
    from conftest import QUICKSTART, TINY, load_params
    from jaxvision import cli
    workdir = str(tmp_path / "uncertainty")
    args = ["train", "--workdir", workdir, "--config", QUICKSTART, *TINY, "--config.loss.weighting=uncertainty"]
    assert cli.main([*args, "--config.train.num_steps=2"]) == 0
    assert cli.main([*args, "--config.train.num_steps=3"]) == 0
    assert "resuming from" in capsys.readouterr().out
    at = {step: load_params(workdir, step) for step in (2, 3)}
    s = {step: {t: float(p[f"['{LOSS_PARAMS}']['log_var']['{t}']"]) for t in ("semseg", "depth")}
         for step, p in at.items()}
    for task in ("semseg", "depth"):
        assert s[2][task] != 0.0 and s[3][task] != s[2][task]  # trained from 0, saved, trained on
    logs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in line]
    step3 = next(line for line in logs if line["step"] == 3)
    # step 3's loss used the restored log-variances of the step-2 checkpoint, not fresh zeros
    for task in ("semseg", "depth"):
        assert step3[f"train/precision_{task}"] == pytest.approx(math.exp(-s[2][task]), rel=1e-5)
