"""Training losses: masked cross-entropy, scale-invariant log (SI-log) depth loss, and their weighted sum.

All functions are pure `jax.numpy`, work on fixed shapes (invalid pixels are masked with `jnp.where`,
never removed), and are safe to `jax.jit` and differentiate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = 255) -> jax.Array:
    """Mean softmax cross-entropy over valid pixels.

    logits [B,H,W,C], labels [B,H,W] integer class ids. Pixels labelled `ignore_index` or outside
    [0, C) are ignored; returns 0 (not NaN) when no pixel is valid.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"cross_entropy: logits {logits.shape} must be labels {labels.shape} plus a class axis")
    num_classes = logits.shape[-1]
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(valid, labels, 0)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    total = jnp.sum(jnp.where(valid, nll, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def silog_loss(pred: jax.Array, target: jax.Array, lam: float, eps: float = 1e-6) -> jax.Array:
    """Scale-invariant log loss (Eigen et al. 2014), averaged over images.

    Per image, with e = log(target) - log(pred) over the pixels where target > 0:
    loss_i = sqrt(Var(e) + lam * Mean(e)^2 + eps). Images without a valid pixel are left out of
    the average (0 if none has one). `pred` is clamped at `eps` before the log.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"silog_loss: pred {pred.shape} and target {target.shape} must both be [B,H,W]")
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    valid = target > 0
    count = jnp.sum(valid, axis=(1, 2)).astype(jnp.float32)
    denom = jnp.maximum(count, 1.0)
    err = jnp.where(valid, jnp.log(jnp.where(valid, target, 1.0)) - jnp.log(jnp.maximum(pred, eps)), 0.0)
    mean = jnp.sum(err, axis=(1, 2)) / denom
    var = jnp.sum(jnp.where(valid, jnp.square(err - mean[:, None, None]), 0.0), axis=(1, 2)) / denom
    per_image = jnp.sqrt(var + lam * jnp.square(mean) + eps)
    has_valid = count > 0
    return jnp.sum(jnp.where(has_valid, per_image, 0.0)) / jnp.maximum(jnp.sum(has_valid), 1).astype(jnp.float32)


def _loss_field(loss_config, name: str) -> float:
    try:
        return getattr(loss_config, name)
    except (AttributeError, KeyError):
        raise KeyError(f"config.loss.{name} is missing (expected fields: semseg_weight, depth_weight, "
                       f"silog_lambda)") from None


def segdepth_loss(outputs: dict, batch: dict, loss_config) -> tuple[jax.Array, dict]:
    """semseg_weight * cross-entropy + depth_weight * SI-log.

    outputs: {'semseg': logits [B,H,W,C], 'depth': metres [B,H,W]}; batch: {'semseg', 'depth'}.
    Returns (total, {'loss_semseg', 'loss_depth', 'loss'}).
    """
    semseg_weight = _loss_field(loss_config, "semseg_weight")
    depth_weight = _loss_field(loss_config, "depth_weight")
    silog_lambda = _loss_field(loss_config, "silog_lambda")
    loss_semseg = cross_entropy(outputs["semseg"], batch["semseg"])
    loss_depth = silog_loss(outputs["depth"], batch["depth"], silog_lambda)
    total = semseg_weight * loss_semseg + depth_weight * loss_depth
    return total, {"loss_semseg": loss_semseg, "loss_depth": loss_depth, "loss": total}
