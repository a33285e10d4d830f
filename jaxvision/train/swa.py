"""Stochastic Weight Averaging (seed 000, section 2.3.4, Figure 2.16; Izmailov et al. 2018).

The thesis' recipe (300 epochs, E steps per epoch): SGD with momentum 0.9 at lr 4e-4; from epoch 250 the
lr decays linearly to 2e-4 over 10 epochs and stays there; the weights at the end of every epoch of that
last phase are averaged with equal weights; the BatchNorm statistics of the averaged weights are then
recomputed by forward passes over the training set.

In training (`swa.enabled` in the config) `swa_schedule` is the learning-rate schedule (`schedule.name=swa`),
`averaging` is the last link of the optax chain, so the running average (`init` / `update` at the steps
`should_snapshot` picks) is checkpointed with the optimizer state, and at the last step the loop swaps in
`averaged_params` and refits BatchNorm with `recompute_batch_stats` (jaxvision/train/loop.py `apply_swa`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax
from flax import struct


def swa_schedule(base_lr: float, swa_lr: float, total_steps: int, swa_start_step: int,
                 decay_steps: int) -> optax.Schedule:
    """Constant `base_lr` until `swa_start_step`, linear to `swa_lr` over `decay_steps`, then `swa_lr`."""
    if not 0 <= swa_start_step <= swa_start_step + decay_steps <= total_steps:
        raise ValueError(f"swa_schedule: need 0 <= swa_start_step ({swa_start_step}) and swa_start_step + "
                         f"decay_steps ({decay_steps}) <= total_steps ({total_steps})")
    return optax.join_schedules([optax.constant_schedule(base_lr),
                                 optax.linear_schedule(base_lr, swa_lr, decay_steps)], [swa_start_step])


class SWAState(struct.PyTreeNode):
    """The running equal-weight mean of the snapshots (`params`) and how many it holds (`count`)."""

    params: Any
    count: jax.Array


def init(params) -> SWAState:
    """An empty average shaped like `params`: the first `update` sets it to that snapshot."""
    return SWAState(params=params, count=jnp.zeros((), jnp.int32))


def update(swa: SWAState, params) -> SWAState:
    """Adds a snapshot: avg + (p - avg) / (n + 1), so after n snapshots avg is their plain mean."""
    weight = 1.0 / (swa.count + 1).astype(jnp.float32)
    averaged = jax.tree.map(lambda avg, p: avg + (p - avg) * weight.astype(avg.dtype), swa.params, params)
    return SWAState(params=averaged, count=swa.count + 1)


def should_snapshot(step, start: int, every: int) -> jax.Array:
    """True at steps start, start + every, ... (step = the number of finished updates; traced or not)."""
    step = jnp.asarray(step)
    return (step >= start) & ((step - start) % every == 0)


def recompute_batch_stats(apply_fn: Callable, params, batch_stats, batches: Iterable) -> Any:
    """BatchNorm running statistics of `params` refitted to `batches` (image arrays), like PyTorch's
    `swa_utils.update_bn` (momentum=None): every statistic becomes the equal-weight mean over the batches of
    its train-mode batch value (Flax's biased variance for 'var').

    `apply_fn(variables, images, train=True, mutable=['batch_stats'])` is a Flax linen apply whose layers
    update a running statistic r by r <- m r + (1 - m) b with their own momentum m and batch value b (the
    model's parameters only: drop a task's loss parameters first). m is read off the first batch with
    two passes: from r = 0 a pass gives z = (1 - m) b, from r = c = 1 + |z| it gives o = m c + z, so
    m = (o - z) / c (accurate to a few float32 ulps whatever the scale of b). Every batch then takes one
    pass from r = 0 and b = z / (1 - m). Statistics no train-mode pass changes (m = 1) keep their value.
    """

    @jax.jit  # the weights are arguments, not constants XLA would fold
    def from_stats(params, stats, images):
        return apply_fn({"params": params, "batch_stats": stats}, images, train=True,
                        mutable=["batch_stats"])[1]["batch_stats"]

    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    total, count, momentum = None, 0, None
    for images in batches:
        z = from_stats(params, zeros, images)
        if momentum is None:
            c = jax.tree.map(lambda s: 1.0 + jnp.abs(s), z)
            momentum = jax.tree.map(lambda o, s, c: (o - s) / c, from_stats(params, c, images), z, c)
        total = z if total is None else jax.tree.map(jnp.add, total, z)
        count += 1
    if total is None:
        raise ValueError("recompute_batch_stats: no batches")
    return jax.tree.map(lambda s, m, old: jnp.where(1.0 - m > 1e-6, s / (count * (1.0 - m)), old),
                        total, momentum, batch_stats)


def enabled(config) -> bool:
    """Whether `config` asks for SWA (`swa.enabled`; configs without a `swa` section do not)."""
    return config.get("swa") is not None and bool(config.swa.enabled)


class AveragingState(struct.PyTreeNode):
    """State of `averaging`: the finished updates and the running average."""

    step: jax.Array
    swa: SWAState


def averaging(start: int, every: int) -> optax.GradientTransformation:
    """The last link of an optax chain that keeps the SWA average of the weights after updates start,
    start + every, ... (updates pass through unchanged); `averaged_params(opt_state)` reads it."""
    if start < 1 or every < 1:
        raise ValueError(f"SWA averaging needs start >= 1 and every >= 1, got start={start}, every={every}")

    def init_fn(params):
        return AveragingState(step=jnp.zeros((), jnp.int32), swa=init(params))

    def update_fn(updates, state, params):
        step = state.step + 1
        new_params = optax.apply_updates(params, updates)
        swa = jax.lax.cond(should_snapshot(step, start, every), lambda: update(state.swa, new_params),
                           lambda: state.swa)
        return updates, AveragingState(step=step, swa=swa)

    return optax.GradientTransformation(init_fn, update_fn)


def averaged_params(opt_state) -> tuple[Any, int]:
    """(average, number of snapshots) held by the `averaging` link of `opt_state`; ValueError without one."""
    found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, AveragingState))
             if isinstance(s, AveragingState)]
    if not found:
        raise ValueError("the optimizer state has no SWA average (swa.enabled was off when training started)")
    return found[0].swa.params, int(found[0].swa.count)
