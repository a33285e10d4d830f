"""Stochastic Weight Averaging (seed 000, section 2.3.4): running mean, lr schedule, BatchNorm refit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.train import swa


def test_running_mean_equals_the_mean_of_the_snapshots():
    rng = np.random.default_rng(0)
    snapshots = [{"dense": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)}} for _ in range(5)]
    snapshots = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), snapshots)
    state = swa.init(jax.tree.map(jnp.zeros_like, snapshots[0]))
    update = jax.jit(swa.update)
    for params in snapshots:
        state = update(state, params)
    assert int(state.count) == 5
    expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *snapshots)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state.params, expected)


def test_schedule_of_the_thesis():
    e = 10                                           # steps per epoch: 300 epochs, SWA from 250, 10-epoch decay
    schedule = swa.swa_schedule(4e-4, 2e-4, 300 * e, swa_start_step=250 * e, decay_steps=10 * e)
    steps = [0, 2499, 2500, 2550, 2575, 2600, 2999]
    np.testing.assert_allclose([float(schedule(s)) for s in steps],
                               [4e-4, 4e-4, 4e-4, 3e-4, 2.5e-4, 2e-4, 2e-4], rtol=1e-6)
    with pytest.raises(ValueError, match="total_steps"):
        swa.swa_schedule(4e-4, 2e-4, 100, swa_start_step=95, decay_steps=10)


def test_should_snapshot_every_epoch_of_the_swa_phase():
    steps = jnp.arange(0, 60)
    chosen = np.flatnonzero(jax.jit(swa.should_snapshot, static_argnums=(1, 2))(steps, 30, 10))
    np.testing.assert_array_equal(chosen, [30, 40, 50])
    assert not bool(swa.should_snapshot(29, 30, 10))


class _TinyBN(nn.Module):
    """Dense -> BN (momentum 0.99) -> ReLU -> Dense -> BN (momentum 0.9), and a BN frozen in eval mode."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn1")(nn.Dense(4, name="fc1")(x)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn2")(nn.Dense(3, name="fc2")(x))
        return nn.BatchNorm(use_running_average=True, name="frozen")(x)


def _numpy_batch_stats(params, batches, eps=1e-5):
    """Per-batch mean / biased variance of each BN input, in train mode, averaged over the batches."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    stats = {"bn1": [], "bn2": []}
    for x in batches:
        h1 = np.asarray(x, np.float64) @ p["fc1"]["kernel"] + p["fc1"]["bias"]
        mean, var = h1.mean(axis=(0, 1, 2)), h1.var(axis=(0, 1, 2))
        stats["bn1"].append((mean, var))
        a1 = np.maximum((h1 - mean) / np.sqrt(var + eps) * p["bn1"]["scale"] + p["bn1"]["bias"], 0)
        h2 = a1 @ p["fc2"]["kernel"] + p["fc2"]["bias"]
        stats["bn2"].append((h2.mean(axis=(0, 1, 2)), h2.var(axis=(0, 1, 2))))
    return {name: {"mean": np.mean([m for m, _ in s], axis=0), "var": np.mean([v for _, v in s], axis=0)}
            for name, s in stats.items()}


def test_recompute_batch_stats_is_the_mean_of_the_batch_statistics():
    rng = np.random.default_rng(1)
    model = _TinyBN()
    # raw-pixel scale inputs: first-layer variances in the thousands
    batches = [jnp.asarray(rng.normal(100.0, 40.0, (4, 3, 3, 5)), jnp.float32) for _ in range(3)]
    variables = model.init(jax.random.PRNGKey(0), batches[0], train=False)
    params = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype), variables["params"])
    stale = jax.tree.map(lambda a: a + 7.0, variables["batch_stats"])
    stats = swa.recompute_batch_stats(model.apply, params, stale, iter(batches))
    expected = _numpy_batch_stats(params, batches)
    for layer in ("bn1", "bn2"):   # (solving with c = 1, as the exporter's calibration does, is 8e-5 off here)
        for stat in ("mean", "var"):
            np.testing.assert_allclose(stats[layer][stat], expected[layer][stat], rtol=3e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, stats["frozen"], stale["frozen"])
    with pytest.raises(ValueError, match="no batches"):
        swa.recompute_batch_stats(model.apply, params, stale, [])
