"""Losses against hand-computed values and a plain-numpy second path."""

import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision.config import ConfigError
from jaxvision.losses import (berhu_loss, check_loss_config, cross_entropy, depth_loss, init_loss_params, l1_loss,
                              l2_loss, segdepth_loss, silog_loss)

E = math.e
EPS = 1e-6


def _hand_ce_inputs():
    # one image of 1x3 pixels, 3 classes:
    #   pixel 0: logits (0, 0, 0), label 1       -> p = 1/3, nll = ln 3
    #   pixel 1: logits (0, ln 2, 0), label 1    -> p = 2/4, nll = ln 2
    #   pixel 2: logits (50, -50, 0), label 255  -> ignored
    logits = np.array([[[[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0], [50.0, -50.0, 0.0]]]], np.float32)
    labels = np.array([[[1, 1, 255]]], np.int32)
    return logits, labels


def test_cross_entropy_hand_value_with_ignored_pixel():
    logits, labels = _hand_ce_inputs()
    assert float(cross_entropy(logits, labels)) == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-6)


def test_cross_entropy_out_of_range_labels_are_ignored():
    logits, labels = _hand_ce_inputs()
    for bad in (3, 7, -1):
        labels_bad = labels.copy()
        labels_bad[0, 0, 2] = bad
        assert float(cross_entropy(logits, labels_bad)) == pytest.approx(math.log(6) / 2, rel=1e-6)
    # a custom ignore index: 255 is then out of range (still ignored) and label 0 is ignored too
    labels0 = np.array([[[1, 0, 255]]], np.int32)
    assert float(cross_entropy(logits, labels0, ignore_index=0)) == pytest.approx(math.log(3), rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    logits = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = np.full((2, 3, 4), 255, np.int32)
    loss, grad = jax.value_and_grad(cross_entropy)(jnp.asarray(logits), labels)
    assert float(loss) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_cross_entropy_matches_numpy_loop():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 5, 6)).astype(np.float32) * 3
    labels = rng.integers(0, 6, size=(2, 4, 5)).astype(np.int32)
    labels[0, 0, :] = 255
    labels[1, 2, 3] = 255
    total, count = 0.0, 0
    for b, i, j in np.ndindex(labels.shape):
        if labels[b, i, j] == 255:
            continue
        z = logits[b, i, j].astype(np.float64)
        total += math.log(np.exp(z).sum()) - z[labels[b, i, j]]
        count += 1
    assert float(jax.jit(cross_entropy)(logits, labels)) == pytest.approx(total / count, rel=1e-5)


def test_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits"):
        cross_entropy(np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 5), np.int32))


def _hand_silog_inputs():
    # image 0: target (1, e, invalid), pred (1, 1, 5) -> e = log t - log p = (0, 1): mean 1/2, var 1/4
    # image 1: target (e^2, e^2, e^2), pred (1, e, e^2)  -> e = (2, 1, 0): mean 1, var 2/3
    target = np.array([[[1.0, E, 0.0]], [[E**2, E**2, E**2]]], np.float32)
    pred = np.array([[[1.0, 1.0, 5.0]], [[1.0, E, E**2]]], np.float32)
    return pred, target


def test_silog_hand_value_two_images_with_invalid_pixel():
    pred, target = _hand_silog_inputs()
    lam = 0.5
    expected = (math.sqrt(0.25 + lam * 0.25 + EPS) + math.sqrt(2 / 3 + lam * 1.0 + EPS)) / 2
    assert float(silog_loss(pred, target, lam)) == pytest.approx(expected, rel=1e-5)
    expected_lam0 = (math.sqrt(0.25 + EPS) + math.sqrt(2 / 3 + EPS)) / 2
    assert float(silog_loss(pred, target, 0.0)) == pytest.approx(expected_lam0, rel=1e-5)


def test_silog_images_without_valid_pixels_contribute_nothing():
    pred, target = _hand_silog_inputs()
    pred3 = np.concatenate([pred, np.full((1, 1, 3), 3.0, np.float32)])
    target3 = np.concatenate([target, np.array([[[0.0, -1.0, 0.0]]], np.float32)])
    assert float(silog_loss(pred3, target3, 0.5)) == pytest.approx(float(silog_loss(pred, target, 0.5)), rel=1e-6)
    loss, grad = jax.value_and_grad(silog_loss)(jnp.asarray(pred), np.zeros_like(target), 0.5)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_silog_scale_invariant_only_without_lambda():
    pred, target = _hand_silog_inputs()
    for k in (0.1, 3.0, 40.0):
        assert float(silog_loss(pred * k, target, 0.0)) == pytest.approx(float(silog_loss(pred, target, 0.0)),
                                                                          rel=1e-4)
    # lam = 1, perfect prediction vs the same prediction times e: e = (-1, -1), var 0, mean -1
    target1 = np.array([[[2.0, 5.0]]], np.float32)
    assert float(silog_loss(target1, target1, 1.0)) == pytest.approx(math.sqrt(EPS), rel=1e-3)
    assert float(silog_loss(target1 * E, target1, 1.0)) == pytest.approx(math.sqrt(1.0 + EPS), rel=1e-5)
    assert float(silog_loss(target1 * E, target1, 0.0)) == pytest.approx(math.sqrt(EPS), rel=1e-2)


def test_silog_gradient_finite_and_zero_at_invalid_pixels():
    pred, target = _hand_silog_inputs()
    pred = pred.copy()
    pred[0, 0, 2] = 0.0  # a zero prediction on an invalid pixel must not poison the gradient
    target = target.copy()
    target[1, 0, 0] = -3.0  # negative depth = invalid too
    grad = jax.grad(silog_loss)(jnp.asarray(pred), target, 0.85)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    assert grad[0, 0, 2] == 0.0 and grad[1, 0, 0] == 0.0
    assert np.all(grad[target > 0] != 0.0)
    # a perfect prediction: variance and mean are 0, the sqrt is at eps -> still finite
    perfect = jnp.asarray(np.where(target > 0, target, 1.0))
    assert np.all(np.isfinite(np.asarray(jax.grad(silog_loss)(perfect, target, 0.85))))


def test_silog_matches_numpy_loop():
    rng = np.random.default_rng(2)
    target = rng.uniform(1, 80, size=(3, 6, 7)).astype(np.float32)
    target[rng.random(target.shape) < 0.3] = 0.0
    target[2] = 0.0
    pred = rng.uniform(1, 80, size=target.shape).astype(np.float32)
    lam = 0.85
    per_image = []
    for t, p in zip(target, pred):
        e = [math.log(tv) - math.log(pv) for tv, pv in zip(t.ravel(), p.ravel()) if tv > 0]
        if not e:
            continue
        mean = sum(e) / len(e)
        var = sum((x - mean) ** 2 for x in e) / len(e)
        per_image.append(math.sqrt(var + lam * mean**2 + EPS))
    expected = sum(per_image) / len(per_image)
    assert float(jax.jit(silog_loss, static_argnums=2)(pred, target, lam)) == pytest.approx(expected, rel=1e-5)


def test_segdepth_loss_weights_and_aux():
    logits, labels = _hand_ce_inputs()
    pred, target = _hand_silog_inputs()
    outputs = {"semseg": logits, "depth": pred[:1]}
    batch = {"semseg": labels, "depth": target[:1], "image": np.zeros((1, 1, 3, 3), np.float32)}
    ce = math.log(6) / 2
    silog = math.sqrt(0.25 + 0.5 * 0.25 + EPS)
    for cfg in (ml_collections.ConfigDict(dict(semseg_weight=0.3, depth_weight=0.7, silog_lambda=0.5)),
                types.SimpleNamespace(semseg_weight=0.3, depth_weight=0.7, silog_lambda=0.5)):
        total, aux = jax.jit(lambda o, b, cfg=cfg: segdepth_loss(o, b, cfg))(outputs, batch)
        assert float(aux["loss_semseg"]) == pytest.approx(ce, rel=1e-6)
        assert float(aux["loss_depth"]) == pytest.approx(silog, rel=1e-5)
        assert float(total) == pytest.approx(0.3 * ce + 0.7 * silog, rel=1e-5)
        assert float(aux["loss"]) == float(total)


def test_segdepth_loss_missing_config_field_is_named():
    logits, labels = _hand_ce_inputs()
    pred, target = _hand_silog_inputs()
    cfg = ml_collections.ConfigDict(dict(semseg_weight=0.5, depth_weight=0.5))
    with pytest.raises(KeyError, match="config.loss.silog_lambda"):
        segdepth_loss({"semseg": logits, "depth": pred[:1]}, {"semseg": labels, "depth": target[:1]}, cfg)


# ---------------------------------------------------------------- depth losses: L1, L2, berHu, batch SI-log

def _hand_depth_inputs():
    # residuals r = pred - target on the valid pixels (target > 0): -1, 0 | 3, 0, -0.5; pixel (0, 2) invalid
    pred = np.array([[[1.0, 2.0, 5.0]], [[4.0, 0.5, 3.0]]], np.float32)
    target = np.array([[[2.0, 2.0, 0.0]], [[1.0, 0.5, 3.5]]], np.float32)
    return pred, target


def test_l1_and_l2_hand_values_with_invalid_pixel():
    pred, target = _hand_depth_inputs()
    assert float(l1_loss(pred, target)) == pytest.approx((1 + 0 + 3 + 0 + 0.5) / 5, rel=1e-6)
    assert float(l2_loss(pred, target)) == pytest.approx((1 + 0 + 9 + 0 + 0.25) / 5, rel=1e-6)
    grad = np.asarray(jax.grad(l1_loss)(jnp.asarray(pred), target))
    np.testing.assert_allclose(grad, [[[-0.2, 0.0, 0.0]], [[0.2, 0.0, -0.2]]], atol=1e-7)
    grad = np.asarray(jax.grad(l2_loss)(jnp.asarray(pred), target))
    np.testing.assert_allclose(grad, [[[-0.4, 0.0, 0.0]], [[1.2, 0.0, -0.2]]], atol=1e-6)
    for fn in (l1_loss, l2_loss, berhu_loss):
        loss, grad = jax.value_and_grad(fn)(jnp.asarray(pred), np.zeros_like(target))
        assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_berhu_hand_value_both_branches_and_batch_threshold():
    pred, target = _hand_depth_inputs()
    # c = 0.2 * max|r| = 0.2 * 3 (the max is over the whole batch) = 0.6
    # |r| = 1 > c: (1 + .36) / 1.2; |r| = 3 > c: (9 + .36) / 1.2; |r| = .5 <= c: .5; zeros: 0
    expected = ((1 + 0.36) / 1.2 + (9 + 0.36) / 1.2 + 0.5) / 5
    assert float(berhu_loss(pred, target)) == pytest.approx(expected, rel=1e-6)
    # c is a per-batch constant: d/dr = r / c on the quadratic branch, sign(r) on the linear one, over N = 5
    grad = np.asarray(jax.grad(berhu_loss)(jnp.asarray(pred), target))
    np.testing.assert_allclose(grad, [[[-1 / 0.6 / 5, 0.0, 0.0]], [[3 / 0.6 / 5, 0.0, -1 / 5]]], rtol=1e-5)
    # threshold 0.5: c = 1.5, |r| = 1 is now on the linear branch
    assert float(berhu_loss(pred, target, 0.5)) == pytest.approx((1 + (9 + 2.25) / 3 + 0.5) / 5, rel=1e-6)
    # continuity at |r| = c and a perfect prediction (c = 0) with a finite, zero gradient
    assert float(berhu_loss(np.array([[[3.0, 1.6]]], np.float32), np.array([[[2.0, 1.0]]], np.float32), 0.6)) \
        == pytest.approx((0.6 + (1 + 0.36) / 1.2) / 2, rel=1e-6)
    loss, grad = jax.value_and_grad(berhu_loss)(jnp.asarray(target), target)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_silog_batch_reduction_hand_value():
    pred, target = _hand_silog_inputs()
    # all valid errors of the batch: (0, 1, 2, 1, 0): mean 0.8, var 1.2 - 0.64 = 0.56
    assert float(silog_loss(pred, target, 0.5, reduction="batch")) == pytest.approx(
        math.sqrt(0.56 + 0.5 * 0.64 + EPS), rel=1e-5)
    assert float(silog_loss(pred, np.zeros_like(target), 0.5, reduction="batch")) == 0.0
    with pytest.raises(ValueError, match="reduction 'pixel' is unknown"):
        silog_loss(pred, target, 0.5, reduction="pixel")


def _loss_cfg(**fields):
    base = dict(semseg_weight=0.3, depth_weight=0.7, silog_lambda=0.5, depth_loss="silog", weighting="fixed",
                silog_reduction="image", berhu_threshold=0.2)
    return ml_collections.ConfigDict({**base, **fields})


def test_depth_loss_is_selected_by_config():
    pred, target = _hand_depth_inputs()
    assert float(depth_loss(pred, target, _loss_cfg(depth_loss="l1"))) == pytest.approx(0.9, rel=1e-6)
    assert float(depth_loss(pred, target, _loss_cfg(depth_loss="l2"))) == pytest.approx(2.05, rel=1e-6)
    assert float(depth_loss(pred, target, _loss_cfg(depth_loss="berhu", berhu_threshold=0.5))) == pytest.approx(
        1.05, rel=1e-6)
    assert float(depth_loss(pred, target, _loss_cfg(silog_reduction="batch"))) == pytest.approx(
        float(silog_loss(pred, target, 0.5, reduction="batch")), rel=1e-6)
    # configs written before these fields existed mean SI-log per image with fixed weights
    old = ml_collections.ConfigDict(dict(semseg_weight=0.3, depth_weight=0.7, silog_lambda=0.5))
    assert float(depth_loss(pred, target, old)) == pytest.approx(float(silog_loss(pred, target, 0.5)), rel=1e-6)
    assert init_loss_params(old) == {}


@pytest.mark.parametrize("field, value", [("depth_loss", "l3"), ("weighting", "gradnorm"),
                                          ("silog_reduction", "pixel")])
def test_unknown_loss_choice_is_a_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"loss.{field} '{value}' is unknown; choose one of"):
        check_loss_config(_loss_cfg(**{field: value}))


# ---------------------------------------------------------------- uncertainty weighting and deep supervision

def _hand_outputs():
    logits, labels = _hand_ce_inputs()
    pred, target = _hand_depth_inputs()
    outputs = {"semseg": jnp.asarray(logits), "depth": jnp.asarray(pred[:1])}
    batch = {"semseg": labels, "depth": target[:1]}
    return outputs, batch, math.log(6) / 2, 0.5  # CE, L1 of image 0: (1 + 0) / 2


def test_uncertainty_weighting_value_and_gradients_match_the_hand_formula():
    outputs, batch, ce, l1 = _hand_outputs()
    cfg = _loss_cfg(weighting="uncertainty", depth_loss="l1")
    params = init_loss_params(cfg)
    assert set(params["log_var"]) == {"semseg", "depth"} and all(float(v) == 0 for v in params["log_var"].values())
    s_seg, s_dep = 0.3, -0.2
    params = {"log_var": {"semseg": jnp.float32(s_seg), "depth": jnp.float32(s_dep)}}

    def total(p, o):
        return segdepth_loss(o, batch, cfg, p)

    (value, logs), (grad_p, grad_o) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(params, outputs)
    # total = exp(-s_seg) CE + s_seg / 2 + exp(-s_dep) L1 / 2 + s_dep / 2
    expected = math.exp(-s_seg) * ce + s_seg / 2 + 0.5 * math.exp(-s_dep) * l1 + s_dep / 2
    assert float(value) == pytest.approx(expected, rel=1e-6) and float(logs["loss"]) == float(value)
    assert float(grad_p["log_var"]["semseg"]) == pytest.approx(0.5 - math.exp(-s_seg) * ce, rel=1e-5)
    assert float(grad_p["log_var"]["depth"]) == pytest.approx(0.5 - 0.5 * math.exp(-s_dep) * l1, rel=1e-5)
    assert float(logs["precision_semseg"]) == pytest.approx(math.exp(-s_seg), rel=1e-6)
    assert float(logs["precision_depth"]) == pytest.approx(math.exp(-s_dep), rel=1e-6)
    assert float(logs["loss_semseg"]) == pytest.approx(ce, rel=1e-6) and float(logs["loss_depth"]) == 0.5
    # the depth gradient is the L1 gradient (sign / N = +-1/2) times 0.5 exp(-s_dep)
    np.testing.assert_allclose(np.asarray(grad_o["depth"]), [[[-0.5 * 0.5 * math.exp(-s_dep), 0.0, 0.0]]],
                               rtol=1e-5, atol=1e-8)


def test_uncertainty_weighting_without_its_parameters_is_an_error():
    outputs, batch, _, _ = _hand_outputs()
    with pytest.raises(ValueError, match="needs the learnable log-variances"):
        segdepth_loss(outputs, batch, _loss_cfg(weighting="uncertainty"))


def test_deep_supervision_adds_aux_losses_with_the_task_weight():
    outputs, batch, ce, l1 = _hand_outputs()
    uniform = jnp.zeros_like(outputs["semseg"])  # CE ln 3 on both valid pixels
    pred2 = jnp.asarray([[[2.0, 2.0, 9.0]]])     # r = (0, 0): L1 = 0
    pred3 = jnp.asarray([[[5.0, 1.0, 9.0]]])     # r = (3, -1): L1 = 2
    outputs = {**outputs, "aux": {"semseg": [uniform], "depth": (pred2, pred3)}}
    cfg = _loss_cfg(depth_loss="l1")
    total, logs = jax.jit(lambda o: segdepth_loss(o, batch, cfg))(outputs)
    assert float(logs["loss_semseg"]) == pytest.approx(ce, rel=1e-6)
    assert float(logs["loss_semseg_aux"]) == pytest.approx(math.log(3), rel=1e-6)
    assert float(logs["loss_depth"]) == pytest.approx(l1, rel=1e-6)
    assert float(logs["loss_depth_aux"]) == pytest.approx(0.0 + 2.0, rel=1e-6)
    assert float(total) == pytest.approx(0.3 * (ce + math.log(3)) + 0.7 * (l1 + 2.0), rel=1e-6)
    # uncertainty weighting weighs each task's summed losses
    params = {"log_var": {"semseg": jnp.float32(0.0), "depth": jnp.float32(0.0)}}
    total_u, _ = segdepth_loss(outputs, batch, _loss_cfg(depth_loss="l1", weighting="uncertainty"), params)
    assert float(total_u) == pytest.approx((ce + math.log(3)) + 0.5 * (l1 + 2.0), rel=1e-6)
    # no aux: no aux logs
    _, logs = segdepth_loss({k: v for k, v in outputs.items() if k != "aux"}, batch, cfg)
    assert "loss_semseg_aux" not in logs and "loss_depth_aux" not in logs
    bad = {**outputs, "aux": {"depth": [pred2[:, :, :2]]}}
    with pytest.raises(ValueError, match=r"outputs\['aux'\]\['depth'\]\[0\] has shape"):
        segdepth_loss(bad, batch, cfg)


def test_task_eval_ignores_aux_and_task_inits_loss_params():
    from jaxvision.tasks.segdepth import SegDepthTask
    outputs, batch, _, _ = _hand_outputs()
    config = ml_collections.ConfigDict(dict(loss=_loss_cfg(), data=dict(num_classes=3)))
    task = SegDepthTask(config)
    with_aux = {**outputs, "aux": {"semseg": [outputs["semseg"] * -1.0], "depth": [outputs["depth"] * 2.0]}}
    plain, aux = task.eval_sums(outputs, batch), task.eval_sums(with_aux, batch)
    assert plain.keys() == aux.keys() and all(np.array_equal(plain[k], aux[k]) for k in plain)
    assert task.init_loss_params() == {}
    config.loss.weighting = "uncertainty"
    assert set(SegDepthTask(config).init_loss_params()["log_var"]) == {"semseg", "depth"}
    config.loss.weighting = "dwa"
    with pytest.raises(ConfigError, match="loss.weighting 'dwa'"):
        SegDepthTask(config)
