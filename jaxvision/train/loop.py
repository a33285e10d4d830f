"""`train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`: the whole run in one place.

config -> data -> model -> train state (restored if the workdir has checkpoints) -> jitted steps
over the device mesh -> periodic eval, logs and checkpoints -> final checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from jaxvision import models, visualize
from jaxvision.config import save_config
from jaxvision.data import pipeline
from jaxvision.fileio import write_atomic
from jaxvision.tasks import get_task, model_init_inputs, model_input_keys
from jaxvision.train import parallel, swa
from jaxvision.train.checkpoint import CheckpointError, Checkpointer
from jaxvision.train.logging import MetricsWriter, Progress, truncate_after
from jaxvision.train.optim import make_optimizer
from jaxvision.train.state import (TrainState, create_train_state, make_eval_step, make_predict_fn, make_train_step,
                                   model_params, state_to_tree, tree_to_state)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# model.* config fields the trainer reads, not model options: converted encoder weights to start from, and a
# run (workdir) whose latest checkpoint's encoder to start from.
TRAINER_MODEL_FIELDS = ("encoder_weights", "init_from")


class WorkdirError(RuntimeError):
    """The workdir cannot be created or written."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""


class Interrupted(RuntimeError):
    """SIGTERM / SIGINT arrived; a checkpoint was saved first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` and checks that it is writable."""
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(f"cannot write to workdir {workdir}: {e.strerror or e}") from None
    return workdir


def build_model(config):
    """The model of `config.model` (less the trainer's fields, `TRAINER_MODEL_FIELDS`) with the compute dtype of
    `config.train`."""
    dtype_name = config.train.compute_dtype
    if dtype_name not in COMPUTE_DTYPES:
        raise ValueError(f"train.compute_dtype '{dtype_name}' is unknown; choose one of {', '.join(COMPUTE_DTYPES)}")
    fields = {k: v for k, v in config.model.to_dict().items() if k not in TRAINER_MODEL_FIELDS}
    return models.create_from_config(fields, dtype=COMPUTE_DTYPES[dtype_name])


def load_encoder_weights(config, state: TrainState, mesh) -> TrainState:
    """`state` with the encoder's params and batch stats replaced by the converted weights named by
    `config.model.encoder_weights` (a `jaxvision convert-weights` directory; empty or absent: `state` unchanged).

    The weights must be of model `config.model.encoder` with every encoder variable, shaped as in `state`;
    a classifier 'head' (weights converted with num_classes > 0) is ignored, so either conversion works.
    Raises ValueError naming the directory otherwise.
    """
    weights_dir = config.model.get("encoder_weights", "")
    if not weights_dir:
        return state
    from jaxvision.convert import load_pretrained  # noqa: PLC0415  (Orbax restore; only runs when asked)
    encoder = config.model.get("encoder", "")
    if not encoder or "encoder" not in state.params:
        raise ValueError(f"model.encoder_weights={weights_dir}: model '{config.model.name}' has no encoder "
                         f"(model.encoder) to initialise")
    variables, metadata = load_pretrained(weights_dir)
    if metadata.get("model") != encoder:
        raise ValueError(f"model.encoder_weights={weights_dir} holds '{metadata.get('model')}' weights, but "
                         f"model.encoder is '{encoder}'")
    current = {"params": state.params["encoder"], "batch_stats": state.batch_stats.get("encoder", {})}
    loaded = {col: {k: v for k, v in variables.get(col, {}).items() if k != "head"} for col in current}
    problems = _tree_differences(current, loaded)
    if problems:
        raise ValueError(f"model.encoder_weights={weights_dir} does not fit the encoder {encoder} of this config "
                         f"({len(problems)} differences): {'; '.join(problems[:8])}")
    loaded = jax.device_put(jax.tree.map(lambda w, c: np.asarray(w, c.dtype), loaded, current),
                            parallel.replicated(mesh))
    print(f"encoder initialised from {weights_dir} ({metadata.get('source')} {encoder})", flush=True)
    return state.replace(params={**state.params, "encoder": loaded["params"]},
                         batch_stats={**state.batch_stats, "encoder": loaded["batch_stats"]} if loaded["batch_stats"]
                         else state.batch_stats)


def _tree_differences(current: dict, loaded: dict) -> list[str]:
    """Sorted 'path missing' / 'path unexpected' / 'path [loaded shape] vs [current shape]' between two pytrees."""
    want = {k: np.shape(v) for k, v in traverse_util.flatten_dict(current).items()}
    have = {k: np.shape(v) for k, v in traverse_util.flatten_dict(loaded).items()}
    return sorted({"/".join(k) + (" missing" if k in want else " unexpected") for k in want.keys() ^ have.keys()}
                  | {f"{'/'.join(k)} {list(have[k])} vs {list(want[k])}" for k in want.keys() & have.keys()
                     if have[k] != want[k]})


def read_checkpoint_params(workdir: str) -> tuple[dict, str]:
    """(params, checkpoint path) of the latest checkpoint in another run's `workdir`, as numpy arrays, read
    without its config (any model, any optimizer). FileNotFoundError / CheckpointError name the path."""
    import orbax.checkpoint as ocp  # noqa: PLC0415  (only runs when asked)
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(directory) else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}: is {workdir} a trained jaxvision workdir?")
    path = os.path.join(directory, str(steps[-1]))
    reader = ocp.StandardCheckpointer()
    try:
        saved = reader.metadata(os.path.join(path, "default")).item_metadata.tree
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
        tree = reader.restore(os.path.join(path, "default"), like)
    except Exception as e:  # Orbax raises many types; all mean the same to the user
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                              ) from e
    return jax.tree.map(np.asarray, tree["params"]), path


def load_encoder_from_run(config, state: TrainState, mesh) -> TrainState:
    """`state` with params['encoder'] replaced by the encoder of the latest checkpoint of the run in
    `config.model.init_from` (a workdir, e.g. MLM pretraining before fine-tuning; empty or absent: `state`
    unchanged). Every other parameter (a new head) keeps its initialisation. The encoders must have the same
    parameter names and shapes; ValueError lists the differences otherwise."""
    workdir = config.model.get("init_from", "")
    if not workdir:
        return state
    if "encoder" not in state.params:
        raise ValueError(f"model.init_from={workdir}: model '{config.model.name}' has no 'encoder' parameters")
    params, path = read_checkpoint_params(workdir)
    if "encoder" not in params:
        raise ValueError(f"model.init_from={workdir}: checkpoint {path} has no 'encoder' parameters")
    problems = _tree_differences(state.params["encoder"], params["encoder"])
    if problems:
        raise ValueError(f"model.init_from={workdir}: the encoder of checkpoint {path} does not fit this config's "
                         f"({len(problems)} differences): {'; '.join(problems[:8])}")
    encoder = jax.device_put(jax.tree.map(lambda w, c: np.asarray(w, c.dtype), params["encoder"],
                                          state.params["encoder"]), parallel.replicated(mesh))
    print(f"encoder initialised from {path}", flush=True)
    return state.replace(params={**state.params, "encoder": encoder})


def initial_state(config, model, mesh) -> TrainState:
    """A fresh state: the model's variables and the task's learnable loss parameters (if any), replicated."""
    tx, _ = make_optimizer(config, config.train.num_steps)
    task = get_task(config)
    inputs, loss_params = model_init_inputs(task, config), task.init_loss_params()
    init = jax.jit(lambda rng: create_train_state(model, tx, rng, inputs, loss_params),
                   out_shardings=parallel.replicated(mesh))
    return init(jax.random.PRNGKey(config.seed))


def restore_or_init(config, model, mesh, checkpointer: Checkpointer, step: int | None = None) -> TrainState:
    """The state at `step` (default: latest checkpoint), or a fresh one when the workdir has none (with the
    converted encoder weights of `model.encoder_weights`, or the encoder of the run `model.init_from`, if any)."""
    state = initial_state(config, model, mesh)
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        return load_encoder_from_run(config, load_encoder_weights(config, state, mesh), mesh)
    tree = checkpointer.restore(step, state_to_tree(state))
    return tree_to_state(tree, state)


def load_run(workdir: str, step: int | None = None, tasks: tuple[str, ...] | None = None):
    """(config, model, state, step) of the run in `workdir` at `step` (default: its latest checkpoint).

    FileNotFoundError when there is no such checkpoint (listing the steps there are); ValueError when the
    run's task is not one of `tasks`, or the checkpoint does not fit the model of its config."""
    from jaxvision.config import config_from_json  # noqa: PLC0415
    config = config_from_json(os.path.join(workdir, "config.json"))
    if tasks is not None and config.task not in tasks:
        names = " or ".join(tasks) if len(tasks) < 3 else f"{', '.join(tasks[:-1])} or {tasks[-1]}"
        raise ValueError(f"this needs a run of task {names}; the run in {workdir} is task "
                         f"'{config.task}'")
    model = build_model(config)
    checkpointer = Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None or step not in checkpointer.all_steps():
            have = checkpointer.all_steps()
            raise FileNotFoundError(f"no checkpoint{'' if step is None else f' at step {step}'} in "
                                    f"{checkpointer.directory}" + (f" (steps: {have})" if have else ": train first"))
        state = restore_or_init(config, model, parallel.make_mesh(), checkpointer, step)
    finally:
        checkpointer.close()
    return config, model, state, int(step)


@contextlib.contextmanager
def _catch_signals():
    """Records SIGTERM / SIGINT instead of dying, so the loop can save and exit cleanly."""
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    return bool(np.max(multihost_utils.process_allgather(np.asarray([int(flag)]))))


def run_eval(config, task, state, eval_step, mesh) -> dict:
    """One pass over the validation split; returns the finalised metrics. The per-batch results are added up,
    or handed to `task.accumulate(collected, batch_results)` when the task has one (e.g. detections for AP)."""
    batch_size = config.eval.batch_size
    totals = None
    add = getattr(task, "accumulate", lambda totals, sums: sums if totals is None else jax.tree.map(np.add, totals, sums))
    for local in pipeline.make_eval_iterator(config.data, batch_size, jax.process_index(), jax.process_count()):
        totals = add(totals, jax.tree.map(_widen, parallel.to_host(eval_step(state, parallel.shard_batch(local, mesh)))))
    return task.finalize(totals)


def _widen(x: np.ndarray) -> np.ndarray:
    """int64 / float64 on the host, so dataset-wide sums (pixel counts) cannot overflow."""
    return x.astype(np.int64) if x.dtype.kind in "iu" else x.astype(np.float64)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the final eval metrics."""
    workdir = prepare_workdir(workdir)
    parallel.maybe_initialize_distributed()
    mesh = parallel.make_mesh()
    task, model = get_task(config), build_model(config)
    tcfg = config.train
    parallel.check_batch_size(tcfg.batch_size, mesh)
    if tcfg.batch_size % (tcfg.grad_accum_steps * mesh.devices.size):
        raise ValueError(f"train.batch_size={tcfg.batch_size} must split into grad_accum_steps={tcfg.grad_accum_steps}"
                         f" micro-batches that each divide over {mesh.devices.size} devices")
    checkpointer = Checkpointer(workdir, tcfg.keep_checkpoints, tcfg.best_metric, tcfg.best_mode)
    state = restore_or_init(config, model, mesh, checkpointer)
    start_step = int(parallel.to_host(state.step))
    if jax.process_index() == 0:
        save_config(config, os.path.join(workdir, "config.json"))
        truncate_after(os.path.join(workdir, "metrics.jsonl"), start_step)
    if start_step:
        print(f"resuming from {checkpointer.directory}/{start_step}", flush=True)

    input_keys = model_input_keys(task)
    train_step = jax.jit(make_train_step(task.loss, tcfg.grad_accum_steps, input_keys), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(task.eval_sums, input_keys))
    batches = pipeline.make_train_iterator(config.data, tcfg.batch_size, config.seed, start_step,
                                           jax.process_index(), jax.process_count())
    _, schedule = make_optimizer(config, tcfg.num_steps)
    writer = MetricsWriter(workdir)
    images = input_keys == ("image",)
    progress = Progress(start_step, tcfg.num_steps, tcfg.batch_size, unit="img" if images else "seq")
    rate_key = "train/images_per_s" if images else "train/sequences_per_s"
    results, step = {}, start_step
    pending = []
    try:
        with _catch_signals() as signals:
            while step < tcfg.num_steps:
                batch = parallel.shard_batch(next(batches), mesh)
                state, metrics = train_step(state, batch)
                step += 1
                pending.append(metrics)
                at_log = step % tcfg.log_every == 0 or step == tcfg.num_steps
                if at_log:
                    _log_train(pending, step, writer, progress, float(schedule(step - 1)), rate_key)
                    pending = []
                stop = _any_process(bool(signals)) if (at_log or jax.process_count() == 1) else False
                if stop:
                    checkpointer.save(step, state_to_tree(state))
                    signum = signals[0] if signals else signal.SIGTERM
                    raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved in "
                                      f"{checkpointer.directory}/{step}; run the same command to resume", signum)
                if step == tcfg.num_steps and swa.enabled(config):
                    state = apply_swa(config, state, mesh)
                at_eval = step % tcfg.eval_every == 0 or step == tcfg.num_steps
                if at_eval:
                    results = run_eval(config, task, state, eval_step, mesh)
                    writer.write(step, {f"eval/{k}": v for k, v in results.items()})
                    checkpointer.save(step, state_to_tree(state), results)
                elif step % tcfg.checkpoint_every == 0:
                    checkpointer.save(step, state_to_tree(state))
    finally:
        progress.close()
        writer.close()
        checkpointer.close()
    if not results and start_step >= tcfg.num_steps:
        results = run_eval(config, task, state, eval_step, mesh)
    return results


def apply_swa(config, state: TrainState, mesh) -> TrainState:
    """`state` with the SWA average of the weights (kept by the optimizer, see jaxvision/train/swa.py) and
    BatchNorm statistics recomputed for them over `swa.bn_batches` training batches (seed 000, 2.3.4)."""
    averaged, snapshots = swa.averaged_params(state.opt_state)
    if snapshots == 0:
        raise ValueError(f"SWA took no snapshot: swa.start_step={config.swa.start_step} is after the last step "
                         f"{config.train.num_steps}")
    batch_stats = state.batch_stats
    if batch_stats:
        batches = pipeline.make_train_iterator(config.data, config.train.batch_size, config.seed + 1, 0,
                                               jax.process_index(), jax.process_count())
        images = (parallel.shard_batch(next(batches), mesh)["image"] for _ in range(config.swa.bn_batches))
        batch_stats = swa.recompute_batch_stats(state.apply_fn, model_params(averaged), batch_stats, images)
    print(f"SWA: weights averaged over {snapshots} snapshots, BatchNorm statistics recomputed over "
          f"{config.swa.bn_batches} batches", flush=True)
    return state.replace(params=averaged, batch_stats=batch_stats)


def _log_train(pending: list, step: int, writer: MetricsWriter, progress: Progress, lr: float, rate_key: str) -> None:
    """Fetches the metrics of the last steps, stops on NaN/Inf, writes averages and the examples/s under
    `rate_key`, advances the bar."""
    fetched = parallel.to_host(pending)
    bad = [step - len(fetched) + 1 + i for i, m in enumerate(fetched) if m["nonfinite"]]
    if bad:
        raise NonFiniteLossError(f"loss became NaN/Inf at step {bad[0]}; training stopped without updating the "
                                 f"weights (lower optimizer.lr or enable optimizer.clip_grad_norm); the last good "
                                 f"checkpoint is kept")
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "nonfinite"}
    rate = progress.update(step, means["loss"])
    writer.write(step, {**{f"train/{k}": v for k, v in means.items()}, rate_key: rate,
                        "train/lr": lr, "time": time.time()})


def evaluate(config, workdir: str, step: int | None = None, write: bool = True) -> dict:
    """Evaluates the checkpoint at `step` (default: latest); writes eval_metrics.json/.md and the task's
    predictions (predictions.png for images, predictions.md for text)."""
    workdir = os.path.abspath(workdir)
    parallel.maybe_initialize_distributed()
    mesh = parallel.make_mesh()
    task, model = get_task(config), build_model(config)
    checkpointer = Checkpointer(workdir, config.train.keep_checkpoints, config.train.best_metric,
                                config.train.best_mode)
    try:
        if (step if step is not None else checkpointer.latest_step()) is None:
            raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}: train first")
        state = restore_or_init(config, model, mesh, checkpointer, step)
    finally:
        checkpointer.close()
    results = run_eval(config, task, state, jax.jit(make_eval_step(task.eval_sums, model_input_keys(task))), mesh)
    if write and jax.process_index() == 0:
        step = int(parallel.to_host(state.step))
        table = task.format(results)
        write_atomic(os.path.join(workdir, "eval_metrics.md"), f"# eval at step {step}\n\n{table}\n")
        write_atomic(os.path.join(workdir, "eval_metrics.json"),
                      json.dumps({"step": step, **{k: _jsonable(v) for k, v in results.items()}}, indent=2))
    batch, outputs = _first_predictions(config, state, mesh, model_input_keys(task))
    if write and jax.process_index() == 0:
        task.save_predictions(os.path.join(workdir, "predictions.png"), batch, outputs, config.eval.num_grid_images)
        log = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(log):
            visualize.plot_training_curves(log, os.path.join(workdir, "curves.png"))
    return results


def _first_predictions(config, state, mesh, input_keys) -> tuple[dict, dict]:
    """The first validation batch and the model's outputs on it (inputs: its `input_keys`), gathered on every
    process."""
    local = next(pipeline.make_eval_iterator(config.data, config.eval.batch_size, jax.process_index(),
                                             jax.process_count()))
    sharded = parallel.shard_batch(local, mesh)
    outputs = jax.jit(make_predict_fn())(state, *(sharded[k] for k in input_keys))
    if jax.process_count() == 1:
        return local, jax.tree.map(np.asarray, outputs)
    gather = lambda tree: multihost_utils.process_allgather(tree, tiled=True)  # noqa: E731
    return gather(local), gather(outputs)


def _jsonable(value):
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array)
    return [None if not np.isfinite(v) else float(v) for v in array.ravel()]


