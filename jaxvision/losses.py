"""Training losses of the segmentation + depth reports (seeds 002 / 003) and their task weighting.

Semantic loss: softmax cross-entropy with ignore label 255. Depth losses (`config.loss.depth_loss`),
all on metric depth and masked to the valid pixels (target > 0):

    silog   sqrt(Var(e) + lambda * Mean(e)^2 + eps), e = log(target) - log(pred)   (seed 003 l. 371-432)
    l1      Mean |pred - target|                                                    (seed 002 l. 472, P3+)
    l2      Mean (pred - target)^2                                                  (seed 002 l. 472)
    berhu   Mean B(pred - target), B(r) = |r| if |r| <= c else (r^2 + c^2) / (2c),
            c = berhu_threshold * max |r| over the batch (Laina et al. 2016: 0.2)   (seed 002 l. 484)

Task weighting (`config.loss.weighting`):

    fixed        semseg_weight * L_semseg + depth_weight * L_depth   (the reports' w and 1 - w:
                 seed 002 Tables 5-6 l. 99-129, seed 003 l. 393)
    uncertainty  sum_t c_t * exp(-s_t) * L_t + s_t / 2 with learnable s_t = log sigma_t^2 (Kendall, Gal &
                 Cipolla, CVPR 2018), see `uncertainty_weighting`

Deep supervision (seed 002 l. 366: "two losses for each task, which are summed up"): when the model
returns `outputs['aux'] = {'semseg': [logits, ...], 'depth': [metres, ...]}`, each intermediate
prediction's task loss is added to that task's loss before the weighting, so it gets the same weight.

All functions are pure `jax.numpy`, work on fixed shapes (invalid pixels are masked with `jnp.where`,
never removed), and are safe to `jax.jit` and differentiate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvision.config import ConfigError

TASKS = ("semseg", "depth")
DEPTH_LOSSES = ("silog", "l1", "l2", "berhu")
WEIGHTINGS = ("fixed", "uncertainty")
SILOG_REDUCTIONS = ("image", "batch")
# Kendall et al.: 1/sigma^2 for a softmax classification likelihood, 1/(2 sigma^2) for a Gaussian regression.
UNCERTAINTY_FACTORS = {"semseg": 1.0, "depth": 0.5}
# Loss fields a config may leave out (older configs and saved config.json files); the others are required.
OPTIONAL_FIELDS = {"depth_loss": "silog", "weighting": "fixed", "silog_reduction": "image", "berhu_threshold": 0.2}


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


def _check_depth_shapes(name: str, pred: jax.Array, target: jax.Array) -> None:
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"{name}: pred {pred.shape} and target {target.shape} must both be [B,H,W]")


def silog_loss(pred: jax.Array, target: jax.Array, lam: float, eps: float = 1e-6,
               reduction: str = "image") -> jax.Array:
    """Scale-invariant log loss (Eigen et al. 2014) in the form of seed 003 (l. 377-381, code l. 412-424).

    With e = log(target) - log(pred) over the pixels where target > 0:
    loss = sqrt(Var(e) + lam * Mean(e)^2 + eps). reduction 'image': Var and Mean per image, the
    losses averaged over the images that have a valid pixel (0 if none has one); 'batch': one Var and
    Mean over all valid pixels of the batch (seed 003's code reduces over dims [0,1,2]).
    `pred` is clamped at `eps` before the log.
    """
    _check_depth_shapes("silog_loss", pred, target)
    if reduction not in SILOG_REDUCTIONS:
        raise ValueError(f"silog_loss: reduction '{reduction}' is unknown; choose one of {', '.join(SILOG_REDUCTIONS)}")
    axes = (1, 2) if reduction == "image" else (0, 1, 2)
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    valid = target > 0
    count = jnp.sum(valid, axis=axes, keepdims=True).astype(jnp.float32)
    denom = jnp.maximum(count, 1.0)
    err = jnp.where(valid, jnp.log(jnp.where(valid, target, 1.0)) - jnp.log(jnp.maximum(pred, eps)), 0.0)
    mean = jnp.sum(err, axis=axes, keepdims=True) / denom
    var = jnp.sum(jnp.where(valid, jnp.square(err - mean), 0.0), axis=axes, keepdims=True) / denom
    losses = jnp.sqrt(var + lam * jnp.square(mean) + eps)
    has_valid = count > 0
    return jnp.sum(jnp.where(has_valid, losses, 0.0)) / jnp.maximum(jnp.sum(has_valid), 1).astype(jnp.float32)


def _masked_pixel_mean(per_pixel: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of `per_pixel` over the valid pixels of the whole batch (0 when none is valid)."""
    return jnp.sum(jnp.where(valid, per_pixel, 0.0)) / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def _residual(pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(r = pred - target, |r|, valid mask target > 0) in float32, r = 0 at invalid pixels.

    |r| is r * sign(r): its gradient is sign(r), 0 for an exact pixel (jnp.abs gives 1 there)."""
    target = target.astype(jnp.float32)
    valid = target > 0
    r = jnp.where(valid, pred.astype(jnp.float32) - target, 0.0)
    return r, r * jnp.sign(r), valid


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean |pred - target| over the valid pixels (target > 0) of the batch; 0 when none is valid."""
    _check_depth_shapes("l1_loss", pred, target)
    _, abs_r, valid = _residual(pred, target)
    return _masked_pixel_mean(abs_r, valid)


def l2_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean (pred - target)^2 over the valid pixels (target > 0) of the batch; 0 when none is valid."""
    _check_depth_shapes("l2_loss", pred, target)
    r, _, valid = _residual(pred, target)
    return _masked_pixel_mean(jnp.square(r), valid)


def berhu_loss(pred: jax.Array, target: jax.Array, threshold: float = 0.2) -> jax.Array:
    """Reverse Huber (berHu) loss of Laina et al. 2016, mean over the valid pixels (target > 0).

    With r = pred - target and c = threshold * max |r| over the valid pixels of the whole batch:
    B(r) = |r| for |r| <= c, (r^2 + c^2) / (2c) otherwise (continuous at |r| = c, value and slope).
    c is a per-batch constant: no gradient flows through the max.
    """
    _check_depth_shapes("berhu_loss", pred, target)
    r, abs_r, valid = _residual(pred, target)
    c = jax.lax.stop_gradient(threshold * jnp.max(abs_r))
    safe_c = jnp.maximum(c, 1e-12)  # c = 0 means every |r| = 0 <= c: the quadratic branch is unused
    per_pixel = jnp.where(abs_r <= c, abs_r, (jnp.square(r) + jnp.square(safe_c)) / (2.0 * safe_c))
    return _masked_pixel_mean(per_pixel, valid)


def loss_field(loss_config, name: str):
    """`config.loss.<name>`; OPTIONAL_FIELDS fall back to their defaults, the others are required."""
    try:
        return getattr(loss_config, name)
    except (AttributeError, KeyError):
        if name in OPTIONAL_FIELDS:
            return OPTIONAL_FIELDS[name]
        raise KeyError(f"config.loss.{name} is missing (expected fields: semseg_weight, depth_weight, "
                       f"silog_lambda)") from None


def check_loss_config(loss_config) -> None:
    """ConfigError naming the field for an unknown depth loss, weighting or SI-log reduction."""
    for name, choices in (("depth_loss", DEPTH_LOSSES), ("weighting", WEIGHTINGS),
                          ("silog_reduction", SILOG_REDUCTIONS)):
        value = loss_field(loss_config, name)
        if value not in choices:
            raise ConfigError(f"loss.{name} '{value}' is unknown; choose one of {', '.join(choices)}")
    for name in ("semseg_weight", "depth_weight", "silog_lambda"):
        loss_field(loss_config, name)


def depth_loss(pred: jax.Array, target: jax.Array, loss_config) -> jax.Array:
    """The depth loss named by `config.loss.depth_loss` (see the module docstring)."""
    name = loss_field(loss_config, "depth_loss")
    if name == "silog":
        return silog_loss(pred, target, loss_field(loss_config, "silog_lambda"),
                          reduction=loss_field(loss_config, "silog_reduction"))
    if name == "l1":
        return l1_loss(pred, target)
    if name == "l2":
        return l2_loss(pred, target)
    if name == "berhu":
        return berhu_loss(pred, target, loss_field(loss_config, "berhu_threshold"))
    raise ConfigError(f"loss.depth_loss '{name}' is unknown; choose one of {', '.join(DEPTH_LOSSES)}")


def init_loss_params(loss_config) -> dict:
    """Learnable loss parameters for `config.loss.weighting`: {} for 'fixed'; for 'uncertainty'
    {'log_var': {'semseg': 0., 'depth': 0.}} (s_t = log sigma_t^2 = 0, i.e. sigma_t = 1, at the start)."""
    if loss_field(loss_config, "weighting") == "uncertainty":
        return {"log_var": {task: jnp.zeros((), jnp.float32) for task in TASKS}}
    return {}


def uncertainty_weighting(task_losses: dict, log_var: dict) -> tuple[jax.Array, dict]:
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018, Sec. 3.2).

    The paper's objective for a Gaussian regression task plus a softmax classification task is
    1/(2 sigma_1^2) L_1 + 1/sigma_2^2 L_2 + log sigma_1 + log sigma_2. With s_t = log sigma_t^2 (learnt
    instead of sigma_t for numerical stability, as in the paper) this is

        total = sum_t c_t * exp(-s_t) * L_t + s_t / 2,   c_semseg = 1, c_depth = 1/2,

    kept exactly as printed (depth is the regression task even when its loss is SI-log, L1 or berHu).
    d total / d s_t = 1/2 - c_t exp(-s_t) L_t, so at the optimum c_t exp(-s_t) = 1 / (2 L_t): every
    task then contributes 1/2 to the total whatever c_t, which only shapes the path there.
    Returns (total, {'precision_<t>': exp(-s_t)}).
    """
    total, logs = 0.0, {}
    for task, loss in task_losses.items():
        s = log_var[task]
        precision = jnp.exp(-s)
        total = total + UNCERTAINTY_FACTORS[task] * precision * loss + 0.5 * s
        logs[f"precision_{task}"] = precision
    return total, logs


def _aux_predictions(outputs: dict, task: str) -> list:
    """The intermediate predictions of `task` in outputs['aux'] (deep supervision), shape-checked."""
    preds = list((outputs.get("aux") or {}).get(task, ()))
    for i, p in enumerate(preds):
        if p.shape != outputs[task].shape:
            raise ValueError(f"outputs['aux']['{task}'][{i}] has shape {p.shape}; the final '{task}' output "
                             f"has {outputs[task].shape} and deep supervision needs the same shape")
    return preds


def segdepth_loss(outputs: dict, batch: dict, loss_config, loss_params: dict | None = None) -> tuple[jax.Array, dict]:
    """Weighted cross-entropy + depth loss with optional deep supervision.

    outputs: {'semseg': logits [B,H,W,C], 'depth': metres [B,H,W], optional 'aux': {'semseg': [...],
    'depth': [...]}}; batch: {'semseg', 'depth'}. `loss_params`: the learnable parameters of
    `init_loss_params` (needed by weighting 'uncertainty'). Per task L_t = loss(final) + sum of
    loss(aux); then the weighting of the module docstring. Returns (total, logs) with 'loss' (total),
    'loss_semseg' / 'loss_depth' (final predictions), 'loss_semseg_aux' / 'loss_depth_aux' (sum over
    the aux predictions, when present) and, for 'uncertainty', 'precision_semseg' / 'precision_depth'.
    """
    weighting = loss_field(loss_config, "weighting")
    per_task = {
        "semseg": lambda p: cross_entropy(p, batch["semseg"]),
        "depth": lambda p: depth_loss(p, batch["depth"], loss_config),
    }
    logs, task_losses = {}, {}
    for task, fn in per_task.items():
        final = fn(outputs[task])
        logs[f"loss_{task}"] = final
        aux = _aux_predictions(outputs, task)
        if aux:
            logs[f"loss_{task}_aux"] = sum(fn(p) for p in aux)
            final = final + logs[f"loss_{task}_aux"]
        task_losses[task] = final
    if weighting == "fixed":
        total = (loss_field(loss_config, "semseg_weight") * task_losses["semseg"]
                 + loss_field(loss_config, "depth_weight") * task_losses["depth"])
    elif weighting == "uncertainty":
        if not loss_params or "log_var" not in loss_params:
            raise ValueError("loss.weighting='uncertainty' needs the learnable log-variances in the train state: "
                             "create it with create_train_state(..., loss_params=task.init_loss_params())")
        total, weight_logs = uncertainty_weighting(task_losses, loss_params["log_var"])
        logs.update(weight_logs)
    else:
        raise ConfigError(f"loss.weighting '{weighting}' is unknown; choose one of {', '.join(WEIGHTINGS)}")
    logs["loss"] = total
    return total, logs
