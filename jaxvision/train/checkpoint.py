"""Orbax checkpoints of the train state: keep the last K and the best by an eval metric.

Checkpoints live in `workdir/checkpoints/<step>/`; Orbax writes each to a temporary folder and
renames it when complete, so an interrupted save never looks like a checkpoint. A checkpoint that
cannot be read, or that does not fit the model of the config, raises `CheckpointError`: a run never
silently starts again from scratch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


MODEL_VARIABLES = ("params", "batch_stats")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not match the model."""


class Checkpointer:
    """Saves and restores `state_to_tree(state)` pytrees with optional eval metrics."""

    def __init__(self, workdir: str, keep: int = 3, best_metric: str | None = None, best_mode: str = "max"):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.best_metric, self.best_mode = best_metric, best_mode
        sign = 1.0 if best_mode == "max" else -1.0
        keep_policies = [policies.LatestN(n=keep)]
        if best_metric:
            keep_policies.append(policies.BestN(get_metric_fn=lambda m: sign * float(m[best_metric]), n=1,
                                                keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            create=True, preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def best_step(self) -> int | None:
        """Step with the best `best_metric` among the kept checkpoints that have metrics."""
        scored = [(s, self.manager.metrics(s)) for s in self.all_steps()]
        scored = [(s, float(m[self.best_metric])) for s, m in scored if m and self.best_metric in m]
        if not scored:
            return None
        pick = max if self.best_mode == "max" else min
        return pick(scored, key=lambda item: item[1])[0]

    def save(self, step: int, tree: dict, metrics: dict | None = None) -> None:
        """Saves `tree` at `step` (overwriting nothing: a step already saved is skipped)."""
        if step in self.all_steps():
            return
        clean = {k: float(v) for k, v in (metrics or {}).items() if np.ndim(v) == 0} or None
        self.manager.save(step, args=ocp.args.StandardSave(tree), metrics=clean, force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, like: dict) -> dict:
        """Restores the checkpoint at `step` into the structure, shapes and shardings of `like`."""
        path = os.path.join(self.directory, str(step))
        try:
            metadata = ocp.StandardCheckpointer().metadata(os.path.join(path, "default")).item_metadata
        except Exception as e:  # unreadable metadata
            raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from e
        if metadata is None:
            raise CheckpointError(f"cannot read checkpoint {path}: its metadata (default/_METADATA) is missing or "
                                  f"corrupt")
        saved = metadata.tree
        _check_matches(saved, like, path)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # Orbax raises many types; all mean the same to the user
            raise CheckpointError(f"cannot restore checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from e

    def close(self) -> None:
        self.manager.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""


def _shapes(tree) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(key): tuple(np.shape(leaf)) for key, leaf in flat}


def _check_matches(saved, like: dict, path: str) -> None:
    """Raises naming the first weight that the checkpoint lacks, has extra, or holds in another shape.

    Names are compared for the model variables (the optimizer state mirrors them); the optimizer
    state is checked by its array count.
    """
    have = _shapes({k: saved[k] for k in MODEL_VARIABLES if k in saved})
    want = _shapes({k: like[k] for k in MODEL_VARIABLES})
    saved_count, like_count = len(jax.tree.leaves(saved)), len(jax.tree.leaves(like))
    missing = [k for k in want if k not in have]
    if missing:
        raise CheckpointError(f"checkpoint {path} does not fit the model: it lacks {missing[0]}"
                              f" ({len(missing)} arrays missing); was it written for another config?")
    extra = [k for k in have if k not in want]
    if extra:
        raise CheckpointError(f"checkpoint {path} does not fit the model: it has {extra[0]} that the model lacks"
                              f" ({len(extra)} unexpected arrays); was it written for another config?")
    for key, shape in want.items():
        if have[key] != shape:
            raise CheckpointError(f"checkpoint {path} does not fit the model: {key} has shape {have[key]} in the"
                                  f" checkpoint, the model expects {shape}")
    if saved_count != like_count:
        raise CheckpointError(f"checkpoint {path} holds {saved_count} arrays, this config's train state has"
                              f" {like_count}: was it written with another optimizer?")
