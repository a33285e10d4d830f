"""Losses of the ADAS perception model (seed 000, section 3.4.2).

* `heatmap_loss`: Eq. 3.5, L2 weighted by max{(1 + H)^alpha, (1 + sg(H'))^beta}, summed and divided by the
  number of keypoints N_K (H the target, H' the prediction, sg the stop-gradient).
* `offset_loss`: Eqs. 3.6 / 3.7, L1 at the ground-truth points only (summed over the components), divided by
  the number of objects (3.6) or of lane instances (3.7: the keypoints of a lane are summed).
* `occlusion_loss`: Eq. 3.8, binary cross-entropy of the occlusion logit at the object centres.
* tags: softmax cross-entropy per tag task, their sum scaled by 0.1 (`loss.weights.tags`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

ALPHA, BETA = 4.0, 2.0


def heatmap_loss(pred: jnp.ndarray, target: jnp.ndarray, num_keypoints: jnp.ndarray, alpha: float = ALPHA,
                 beta: float = BETA, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Eq. 3.5 over heatmaps [B, h, w, C] in [0, 1]; `num_keypoints` N_K (clamped to >= 1); `mask` [B] drops
    examples (padding)."""
    weight = jnp.maximum((1 + target) ** alpha, (1 + jax.lax.stop_gradient(pred)) ** beta)
    per_example = jnp.sum(weight * (target - pred) ** 2, axis=(1, 2, 3))
    if mask is not None:
        per_example = per_example * mask
    return jnp.sum(per_example) / jnp.maximum(num_keypoints, 1.0)


def gather_cells(maps: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """Values of `maps` [B, h, w, C] at the cells `index` [B, M, 2] (row, column): [B, M, C]."""
    b, h, w, c = maps.shape
    flat = maps.reshape(b, h * w, c)
    cells = jnp.clip(index[..., 0], 0, h - 1) * w + jnp.clip(index[..., 1], 0, w - 1)
    return jnp.take_along_axis(flat, cells[..., None], axis=1)


def offset_loss(pred: jnp.ndarray, index: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray,
                count: jnp.ndarray) -> jnp.ndarray:
    """Eqs. 3.6 / 3.7: sum over the valid points (`mask` [B, M]) of |pred(point) - target| (summed over the
    components), divided by `count` (objects, or lane instances; clamped to >= 1)."""
    diff = jnp.abs(gather_cells(pred, index) - target).sum(-1)
    return jnp.sum(diff * mask) / jnp.maximum(count, 1.0)


def occlusion_loss(logits: jnp.ndarray, index: jnp.ndarray, occluded: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Eq. 3.8: mean binary cross-entropy of the occlusion logits [B, h, w, 1] at the object centres."""
    bce = optax.sigmoid_binary_cross_entropy(gather_cells(logits, index)[..., 0], occluded)
    return jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def lane_instances(instance: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Number of lane instances in the batch: per example 1 + the largest instance id among its valid points."""
    return jnp.sum(jnp.max(jnp.where(mask > 0, instance, -1), axis=1) + 1).astype(jnp.float32)


def tag_loss(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean softmax cross-entropy of one tag task (logits [B, C], labels [B])."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if mask is None:
        return jnp.mean(ce)
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
