"""Losses against hand-computed values and a plain-numpy second path."""

import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision.losses import cross_entropy, segdepth_loss, silog_loss

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
