"""Metrics against hand-computed values and plain python/numpy loops."""

import math

import jax
import numpy as np
import pytest

from jaxvision.metrics import DEPTH_METRICS, confusion_matrix, depth_metric_sums, finalize, format_table


def _loop_confusion(pred, labels, num_classes, mask, ignore=255):
    cm = np.zeros((num_classes, num_classes), np.int64)
    for b, i, j in np.ndindex(labels.shape):
        g, p = int(labels[b, i, j]), int(pred[b, i, j])
        if mask[b] and g != ignore and 0 <= g < num_classes:
            cm[g, p] += 1
    return cm


def test_confusion_matrix_matches_python_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(3, 6, 7)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    labels[0, 0, 0] = 9  # out of range: ignored
    pred = rng.integers(0, 5, size=labels.shape).astype(np.int32)
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    got = jax.jit(confusion_matrix, static_argnums=2)(pred, labels, 5, mask=mask)
    assert got.dtype == np.int32 and got.shape == (5, 5)
    np.testing.assert_array_equal(np.asarray(got), _loop_confusion(pred, labels, 5, mask))
    np.testing.assert_array_equal(np.asarray(confusion_matrix(pred, labels, 5)),
                                  _loop_confusion(pred, labels, 5, np.ones(3)))


def test_confusion_matrix_hand_example():
    labels = np.array([[[0, 0, 1, 1, 255]]], np.int32)
    pred = np.array([[[0, 1, 1, 2, 3]]], np.int32)
    expected = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(confusion_matrix(pred, labels, 4)), expected)


def _depth_sums(**overrides):
    sums = {k: 0.0 for k in DEPTH_METRICS}
    sums.update(num_images=3.0, silog_rmse=0.6)
    sums.update(overrides)
    return sums


def test_miou_hand_example_absent_and_false_positive_classes():
    # gt    0 0 1 1 255
    # pred  0 1 1 2 3
    # class 0: tp 1, union 2 -> 1/2;  class 1: tp 1, union 3 -> 1/3
    # class 2: predicted once, never in gt -> IoU 0, counted
    # class 3: only predicted on the ignored pixel -> union 0, NaN, not counted
    confusion = confusion_matrix(np.array([[[0, 1, 1, 2, 3]]]), np.array([[[0, 0, 1, 1, 255]]]), 4)
    results = finalize(confusion, _depth_sums())
    np.testing.assert_allclose(results["iou_per_class"][:3], [0.5, 1 / 3, 0.0])
    assert math.isnan(results["iou_per_class"][3])
    assert results["miou"] == pytest.approx(5 / 18)
    assert results["pixel_acc"] == pytest.approx(0.5)
    assert results["silog_rmse"] == pytest.approx(0.2)
    assert results["semseg"] == pytest.approx(100 * 5 / 18)
    assert results["depth"] == pytest.approx(20.0)
    assert results["total"] == pytest.approx(100 * 5 / 18 - 20.0)
    assert results["total"] == pytest.approx(results["semseg"] - results["depth"])


def test_total_matches_a_report_row():
    # seed 002, run original.37628: "total: 39.83, semseg: 67.194, depth: 27.357"
    # two classes, each IoU 67194 / (67194 + 32806) = 0.67194; SI-log RMSE 0.27357 averaged over 2 images
    confusion = np.array([[67194, 32806], [0, 67194]], np.int32)
    results = finalize(confusion, _depth_sums(silog_rmse=2 * 0.27357, num_images=2.0))
    assert results["semseg"] == pytest.approx(67.194)
    assert results["depth"] == pytest.approx(27.357)
    assert results["total"] == pytest.approx(39.837)


def test_finalize_empty_inputs_give_nan_not_errors():
    results = finalize(np.zeros((3, 3), np.int32), _depth_sums(num_images=0.0, silog_rmse=0.0))
    assert math.isnan(results["miou"]) and math.isnan(results["pixel_acc"])
    assert all(math.isnan(results[k]) for k in DEPTH_METRICS)
    assert math.isnan(results["total"])


def test_depth_metric_sums_hand_example():
    # valid pixels: target (2, 4, 3, 4), pred (2, 2, 2, 5); the last pixel is invalid
    target = np.array([[[2.0, 4.0, 3.0, 4.0, 0.0]]], np.float32)
    pred = np.array([[[2.0, 2.0, 2.0, 5.0, 9.0]]], np.float32)
    e = [0.0, math.log(0.5), math.log(2 / 3), math.log(1.25)]  # log pred - log target
    mean_e = sum(e) / 4
    expected = {
        "silog_rmse": math.sqrt(sum(x * x for x in e) / 4 - mean_e**2),
        "abs_rel": (0 + 2 / 4 + 1 / 3 + 1 / 4) / 4,
        "sq_rel": (0 + 4 / 4 + 1 / 3 + 1 / 4) / 4,
        "rmse": math.sqrt((0 + 4 + 1 + 1) / 4),
        "rmse_log": math.sqrt(sum(x * x for x in e) / 4),
        "delta1": 1 / 4,  # ratios 1, 2, 1.5, 1.25: the threshold is strict, 1.25 is not < 1.25
        "delta2": 3 / 4,  # 1.5, 1.25 < 1.5625
        "delta3": 3 / 4,  # 2 > 1.953125
        "num_images": 1.0,
    }
    got = depth_metric_sums(pred, target)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-5, abs=1e-7), key


def _loop_depth_metrics(pred, target, mask):
    sums = {k: 0.0 for k in DEPTH_METRICS}
    sums["num_images"] = 0.0
    for p_img, t_img, m in zip(pred, target, mask):
        valid = t_img > 0
        if not m or not valid.any():
            continue
        p, t = p_img[valid].astype(np.float64), t_img[valid].astype(np.float64)
        e = np.log(p) - np.log(t)
        ratio = np.maximum(p / t, t / p)
        sums["silog_rmse"] += math.sqrt(np.mean(e**2) - np.mean(e) ** 2)
        sums["abs_rel"] += np.mean(np.abs(p - t) / t)
        sums["sq_rel"] += np.mean((p - t) ** 2 / t)
        sums["rmse"] += math.sqrt(np.mean((p - t) ** 2))
        sums["rmse_log"] += math.sqrt(np.mean(e**2))
        for k in (1, 2, 3):
            sums[f"delta{k}"] += np.mean(ratio < 1.25**k)
        sums["num_images"] += 1
    return sums


def test_depth_metric_sums_match_numpy_loop_with_invalid_and_padding():
    rng = np.random.default_rng(3)
    target = rng.uniform(0.5, 80, size=(5, 8, 9)).astype(np.float32)
    target[rng.random(target.shape) < 0.25] = 0.0
    target[1] = 0.0  # no valid pixel: not counted
    target[0, 0, :3] = -2.0  # negative = invalid
    pred = (target * rng.uniform(0.6, 1.6, size=target.shape)).astype(np.float32)
    pred[target <= 0] = rng.uniform(0.0, 5.0, size=int((target <= 0).sum()))  # includes values near 0
    mask = np.array([1, 1, 1, 1, 0], np.float32)  # the last example is padding
    got = jax.jit(depth_metric_sums)(pred, target, mask)
    expected = _loop_depth_metrics(pred, target, mask)
    assert expected["num_images"] == 3
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-4), key
    # sums over two batches add up to the sums over the whole set
    first, second = depth_metric_sums(pred[:2], target[:2], mask[:2]), depth_metric_sums(pred[2:], target[2:], mask[2:])
    for key in expected:
        assert float(first[key] + second[key]) == pytest.approx(float(got[key]), rel=1e-5), key


def test_finalize_averages_depth_sums_over_images():
    rng = np.random.default_rng(4)
    target = rng.uniform(1, 50, size=(3, 4, 4)).astype(np.float32)
    pred = (target * rng.uniform(0.8, 1.3, size=target.shape)).astype(np.float32)
    sums = {k: np.asarray(v) for k, v in depth_metric_sums(pred, target).items()}
    expected = _loop_depth_metrics(pred, target, np.ones(3))
    results = finalize(np.eye(2, dtype=np.int32), sums)
    for key in DEPTH_METRICS:
        assert results[key] == pytest.approx(expected[key] / 3, rel=1e-4), key
    assert results["miou"] == 1.0 and results["pixel_acc"] == 1.0
    assert results["total"] == pytest.approx(100.0 - 100.0 * expected["silog_rmse"] / 3, rel=1e-5)


def test_format_table_lists_metrics_and_classes():
    confusion = confusion_matrix(np.array([[[0, 1, 1, 2, 3]]]), np.array([[[0, 0, 1, 1, 255]]]), 4)
    results = finalize(confusion, _depth_sums())
    table = format_table(results, class_names=("road", "sidewalk", "building", "wall"))
    lines = table.splitlines()
    assert lines[0] == "| metric | value |"
    assert f"| total = semseg - depth (higher is better) | {100 * 5 / 18 - 20:.3f} |" in lines
    assert "| mIoU | 0.2778 |" in lines
    assert "| road | 50.00 |" in lines and "| sidewalk | 33.33 |" in lines
    assert "| building | 0.00 |" in lines and "| wall | - |" in lines
    assert "| 3 | - |" in format_table(results).splitlines()
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        format_table(results, class_names=("a", "b", "c"))
