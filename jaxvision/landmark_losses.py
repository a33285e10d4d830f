"""Losses of the driver-monitoring face model (seed 000, section 2.3.4).

Landmark regression: L_lm(t, p) = sum_i d(t_i - p_i) over the 2N coordinates (Eq. 2.5), with d one of
L1, L2 = x^2 / 2, smooth-L1 (Eq. 2.6-2.7), Wing (Eq. 2.8) and Rectified Wing. Head pose: the Euler loss
1 - cos(|g - g'| mod 2 pi) (Eq. 2.9) per angle. Eyes: binary cross-entropy per sigmoid output. Mouth and
distraction: cross-entropy with optional class weights (Eq. 2.11) or focal loss (Eq. 2.12). Total: Eq. 2.13,
task weights alpha_i and per-sample confidences gamma_j (not applied to the distraction term).

Wing as in Feng et al. (CVPR 2018): w ln(1 + |x| / eps) for |x| < w, else |x| - C with
C = w - w ln(1 + w / eps). The thesis prints ln(1 - |x| / eps) and the threshold eps, both typos of that
formula (the printed C only joins the pieces with the paper's version). Rectified Wing (Feng et al. 2019)
is 0 for |x| < r and Wing of |x| - r beyond. Every function returns one value per sample, [B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LANDMARK_LOSSES = ("l1", "l2", "smooth_l1", "wing", "rectified_wing")


def wing(x: jax.Array, w: float = 10.0, eps: float = 2.0) -> jax.Array:
    """Elementwise Wing loss of the residual `x` (logarithmic inside (-w, w), linear outside, continuous)."""
    a = jnp.abs(x)
    c = w - w * jnp.log1p(w / eps)
    return jnp.where(a < w, w * jnp.log1p(a / eps), a - c)


def rectified_wing(x: jax.Array, w: float = 10.0, eps: float = 2.0, r: float = 0.5) -> jax.Array:
    """Elementwise Rectified Wing loss: 0 for |x| < r, Wing of (|x| - r) with width w - r beyond."""
    a = jnp.abs(x)
    c = w - w * jnp.log1p((w - r) / eps)
    return jnp.where(a < r, 0.0, jnp.where(a < w, w * jnp.log1p((a - r) / eps), a - c))


def smooth_l1(x: jax.Array) -> jax.Array:
    a = jnp.abs(x)
    return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


_ELEMENTWISE = {"l1": jnp.abs, "l2": lambda x: 0.5 * x * x, "smooth_l1": smooth_l1, "wing": wing,
                "rectified_wing": rectified_wing}


def landmark_loss(pred: jax.Array, target: jax.Array, kind: str = "wing", **params) -> jax.Array:
    """Eq. 2.5: sum over the coordinates of d(target - pred); pred / target [B, N, 2] or [B, 2N] -> [B]."""
    if kind not in _ELEMENTWISE:
        raise ValueError(f"landmark loss '{kind}' is unknown; choose one of {', '.join(LANDMARK_LOSSES)}")
    if pred.shape != target.shape:
        raise ValueError(f"landmark loss: prediction shape {pred.shape} differs from target shape {target.shape}")
    d = _ELEMENTWISE[kind](target - pred, **params)
    return d.reshape(d.shape[0], -1).sum(axis=-1)


def euler_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Eq. 2.9 summed over the angles: 1 - cos(|g - g'| mod 2 pi), radians; [B, 3] -> [B]."""
    return (1.0 - jnp.cos(jnp.mod(jnp.abs(pred - target), 2 * jnp.pi))).sum(axis=-1)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sum over the sigmoid outputs of the binary cross-entropy (numerically stable); [B, K] -> [B]."""
    per = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return per.reshape(per.shape[0], -1).sum(axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array | None = None) -> jax.Array:
    """Eq. 2.11: -w_y log softmax(logits)_y per sample; logits [B, C], integer labels [B] -> [B]."""
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1)[:, 0]
    weight = 1.0 if class_weights is None else jnp.asarray(class_weights)[labels]
    return -weight * log_p


def focal_loss(logits: jax.Array, labels: jax.Array, gamma: float = 2.0, alpha: float = 1.0,
               class_weights: jax.Array | None = None) -> jax.Array:
    """Eq. 2.12: alpha (1 - p_y)^gamma times the (weighted) cross-entropy; [B, C], [B] -> [B]."""
    p = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), labels[:, None], axis=-1)[:, 0]
    return alpha * (1.0 - p) ** gamma * cross_entropy(logits, labels, class_weights)


def total_loss(per_sample: dict, task_weights: dict, confidence: jax.Array,
               unweighted: tuple[str, ...] = ("distraction",)) -> tuple[jax.Array, dict]:
    """Eq. 2.13: sum_i alpha_i mean_j gamma_j L_ij, with gamma_j = 1 for the tasks in `unweighted`.

    `per_sample` maps task -> [B] losses, `confidence` is gamma [B] in [0, 1]. The batch sum of Eq. 2.13 is
    divided by the batch size so the learning rate does not depend on it. Returns (total, per-task terms)."""
    terms = {}
    for task, losses in per_sample.items():
        weight = jnp.ones_like(confidence) if task in unweighted else confidence
        terms[task] = task_weights.get(task, 1.0) * jnp.mean(weight * losses)
    return sum(terms.values()), terms
