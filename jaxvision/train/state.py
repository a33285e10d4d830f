"""Train state and the jitted train / eval steps.

A task may have learnable loss parameters (e.g. the log-variances of uncertainty weighting): they live
in `TrainState.params[LOSS_PARAMS]` next to the model's parameters, so the optimizer trains them and
checkpoints hold them like any weight; the model is applied to `model_params(params)` only.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

LOSS_PARAMS = "loss"


def model_params(params):
    """`params` without the task's loss parameters (the variables the model is applied with)."""
    if LOSS_PARAMS not in params:
        return params
    return {k: v for k, v in params.items() if k != LOSS_PARAMS}


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue: step, params, batch stats, optimizer state, RNG."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self) -> dict:
        return {"params": model_params(self.params), "batch_stats": self.batch_stats}


def create_train_state(model, tx, rng: jax.Array, inputs: tuple, loss_params: dict | None = None) -> TrainState:
    """Initialises the model on `inputs`: an input shape (a zero float32 batch of that shape, e.g. NHWC images),
    or a tuple of arrays, the model's positional inputs (e.g. token ids and MLM positions).

    `loss_params` (a task's `init_loss_params()`), when not empty, is stored as params[LOSS_PARAMS]
    and trained by `tx` with the model's parameters; `make_train_step` then passes it to the loss.
    """
    init_rng, state_rng = jax.random.split(rng)
    if all(isinstance(d, int) for d in inputs):
        inputs = (jnp.zeros(inputs, jnp.float32),)
    variables = model.init({"params": init_rng, "dropout": init_rng}, *inputs, train=False)
    params = variables["params"]
    if loss_params:
        if LOSS_PARAMS in params:
            raise ValueError(f"the model has a parameter group named '{LOSS_PARAMS}', the name reserved for the "
                             f"task's loss parameters")
        params = {**params, LOSS_PARAMS: loss_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=state_rng,
        apply_fn=model.apply,
        tx=tx,
    )


def state_to_tree(state: TrainState) -> dict:
    """The checkpointed part of the state (no functions)."""
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state, "rng": state.rng}


def tree_to_state(tree: dict, like: TrainState) -> TrainState:
    return like.replace(**tree)


def _split_microbatches(batch: dict, num: int) -> dict:
    return jax.tree.map(lambda x: x.reshape((num, x.shape[0] // num) + x.shape[1:]), batch)


def model_inputs(batch: dict, input_keys: Sequence[str]) -> tuple:
    """The model's positional inputs: the batch entries named by `input_keys`, in that order."""
    missing = [k for k in input_keys if k not in batch]
    if missing:
        raise KeyError(f"the batch has no {missing} entries for the model (it has {sorted(batch)})")
    return tuple(batch[k] for k in input_keys)


def make_train_step(loss_fn: Callable, grad_accum_steps: int = 1, input_keys: Sequence[str] = ("image",)) -> Callable:
    """Returns `train_step(state, batch) -> (state, metrics)`; the model is applied to the batch entries
    `input_keys` (a task's `input_keys`: images by default).

    `loss_fn(outputs, batch) -> (loss, aux_dict)`; when the state has loss parameters (params[LOSS_PARAMS])
    it is called as `loss_fn(outputs, batch, loss_params=...)` and their gradients are applied too.
    With `grad_accum_steps > 1` the batch is split into micro-batches whose gradients are averaged
    (BatchNorm statistics advance per micro-batch).
    A non-finite loss leaves the state unchanged and reports `nonfinite = 1`.
    """

    def train_step(state: TrainState, batch: dict):
        def micro_loss(params, batch_stats, micro_batch, rng):
            variables = {"params": model_params(params), "batch_stats": batch_stats}
            outputs, updates = state.apply_fn(variables, *model_inputs(micro_batch, input_keys), train=True,
                                              mutable=["batch_stats"], rngs={"dropout": rng})
            if LOSS_PARAMS in params:
                loss, aux = loss_fn(outputs, micro_batch, loss_params=params[LOSS_PARAMS])
            else:
                loss, aux = loss_fn(outputs, micro_batch)
            return loss, (aux, updates.get("batch_stats", batch_stats))

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (loss, (aux, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch, rng)
        else:
            micro = _split_microbatches(batch, grad_accum_steps)

            def body(carry, xs):
                grads_sum, stats = carry
                mb, i = xs
                (loss, (aux, stats)), grads = grad_fn(state.params, stats, mb, jax.random.fold_in(rng, i))
                return (jax.tree.map(jnp.add, grads_sum, grads), stats), (loss, aux)

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, batch_stats), (losses, auxes) = jax.lax.scan(
                body, (zeros, state.batch_stats), (micro, jnp.arange(grad_accum_steps)))
            grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
            loss, aux = losses.mean(), jax.tree.map(jnp.mean, auxes)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            batch_stats=keep(batch_stats, state.batch_stats),
            opt_state=keep(opt_state, state.opt_state),
        )
        metrics = dict(aux, loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.int32))
        return new_state, metrics

    return train_step


def make_eval_step(eval_fn: Callable, input_keys: Sequence[str] = ("image",)) -> Callable:
    """Returns `eval_step(state, batch) -> sums`; `eval_fn(outputs, batch)` gives summable arrays; the model is
    applied to the batch entries `input_keys`."""

    def eval_step(state: TrainState, batch: dict):
        outputs = state.apply_fn(state.variables(), *model_inputs(batch, input_keys), train=False)
        return eval_fn(outputs, batch)

    return eval_step


def make_predict_fn() -> Callable:
    """Returns `predict(state, *inputs) -> outputs` in eval mode (inputs: images, or a task's `input_keys` entries)."""

    def predict(state: TrainState, *inputs):
        return state.apply_fn(state.variables(), *inputs, train=False)

    return predict
