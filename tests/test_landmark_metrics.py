"""DMS evaluation metrics (seed 000, Eq. 2.14-2.15) against hand-computed values and an independent numpy loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import landmark_metrics as lm


def _face(left_pupil, right_pupil, seed=0):
    points = np.random.default_rng(seed).uniform(0.2, 0.8, (98, 2)).astype(np.float32)
    points[96], points[97] = left_pupil, right_pupil
    return points


def _two_faces():
    """Target IODs 0.4 and 0.5; sample 0 has one point off by 0.05, sample 1 every point off by 0.01."""
    target = np.stack([_face((0.3, 0.4), (0.7, 0.4)), _face((0.2, 0.5), (0.5, 0.9), seed=1)])
    pred = target.copy()
    pred[0, 10] += (0.03, 0.04)
    pred[1] += (0.006, 0.008)
    return pred, target, [0.05 / 98 / 0.4, 0.01 / 0.5]


def test_nme_per_sample_by_hand():
    pred, target, expected = _two_faces()
    np.testing.assert_allclose(lm.nme_per_sample(jnp.asarray(pred), jnp.asarray(target)), expected, rtol=1e-5)
    same_pupils = target[:1].copy()
    same_pupils[0, 97] = same_pupils[0, 96]
    assert np.isfinite(float(lm.nme_per_sample(jnp.asarray(pred[:1]), jnp.asarray(same_pupils))[0]))


def test_circular_pose_error_across_the_wrap():
    pred = jnp.asarray([[math.radians(179.0), 0.0, 0.5]])
    target = jnp.asarray([[math.radians(-179.0), 2 * math.pi - 0.1, -0.5]])
    sums = lm.eval_sums({"head_pose": pred}, {"head_pose": target}, jnp.ones(1))
    results = lm.finalize(sums)
    np.testing.assert_allclose([results["yaw_mae"], results["pitch_mae"], results["roll_mae"]],
                               [2.0, math.degrees(0.1), math.degrees(1.0)], rtol=1e-4)


def _batch():
    """Two real samples (hand-checkable) and one padded sample full of wrong predictions."""
    pred_lm, target_lm, nme = _two_faces()
    pred = {"landmarks": np.concatenate([pred_lm, pred_lm[:1] + 5.0]),
            "eyes": np.array([[0.9, 0.2, 0.6, 0.7], [0.1, 0.4, 0.8, 0.3], [0.0, 0.0, 0.0, 0.0]]),
            "mouth": np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 9.0, 0.0]]),
            "distraction": np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.0, 0.0, 1.0]]),
            "head_pose": np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [3.0, 3.0, 3.0]])}
    target = {"landmarks": np.concatenate([target_lm, target_lm[:1]]),
              "eyes": np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]], np.float32),
              "mouth": np.array([0, 1, 0]), "distraction": np.array([1, 0, 0]),
              "head_pose": np.array([[0.1, 0.1, 0.3], [0.0, 0.0, 0.2], [0.0, 0.0, 0.0]])}
    return jax.tree.map(jnp.asarray, pred), jax.tree.map(jnp.asarray, target), nme


def test_padding_is_ignored_and_values_by_hand():
    pred, target, nme = _batch()
    sums = jax.jit(lm.eval_sums)(pred, target, jnp.asarray([1, 1, 0]))
    unpadded = lm.eval_sums(jax.tree.map(lambda x: x[:2], pred), jax.tree.map(lambda x: x[:2], target), jnp.ones(2))
    jax.tree.map(np.testing.assert_array_equal, sums, unpadded)
    results = lm.finalize(sums)
    assert results["nme"] == pytest.approx(100 * np.mean(nme), rel=1e-5)
    assert results["failure_rate"] == 0.0
    # eyes: both samples get every label but right_open right: per label 2/2, 2/2, 2/2, 0/2
    assert [results[f"eyes_{n}_accuracy"] for n in ("left_visible", "left_open", "right_visible", "right_open")] \
        == [1.0, 1.0, 1.0, 0.0]
    assert results["eyes_accuracy"] == 0.75
    # mouth: targets (0, 1), predictions (0, 2): F1 1 for class 0, 0 for class 1 (missed) and 2 (false alarm)
    assert results["mouth_accuracy"] == 0.5 and results["mouth_f1"] == pytest.approx(1 / 3)
    assert results["distraction_accuracy"] == 1.0 and results["distraction_f1"] == 1.0
    np.testing.assert_allclose([results["yaw_mae"], results["pitch_mae"], results["roll_mae"]],
                               [0.0, math.degrees(0.1) / 2, math.degrees(0.2) / 2], rtol=1e-5)


def test_failure_rate_counts_nme_above_ten_percent():
    pred, target, _ = _two_faces()
    pred[1] += 0.06                        # every point off by (0.066, 0.068): NME = 0.095 / 0.5 = 0.19
    nme = np.asarray(lm.nme_per_sample(jnp.asarray(pred), jnp.asarray(target)))
    assert nme[0] < 0.1 < nme[1]
    results = lm.finalize(lm.eval_sums({"landmarks": pred}, {"landmarks": target}, jnp.ones(2)))
    assert results["failure_rate"] == 50.0 and set(results) == {"nme", "failure_rate"}


def test_mouth_weighted_accuracy_and_macro_f1_by_hand():
    labels = jnp.asarray([0, 0, 0, 1, 2, 2])
    logits = jax.nn.one_hot(jnp.asarray([0, 0, 1, 1, 2, 1]), 3)
    results = lm.finalize(lm.eval_sums({"mouth": logits}, {"mouth": labels}, jnp.ones(6)))
    # per class accuracy (recall) 2/3, 1/1, 1/2 with supports 3, 1, 2
    assert results["mouth_closed_accuracy"] == pytest.approx(2 / 3)
    assert results["mouth_semi_open_accuracy"] == 1.0 and results["mouth_open_accuracy"] == 0.5
    assert results["mouth_accuracy"] == pytest.approx((3 * 2 / 3 + 1 * 1 + 2 * 0.5) / 6)
    # F1 = 2PR / (P + R): class 0 P=1 R=2/3; class 1 P=1/3 R=1; class 2 P=1 R=1/2
    f1 = [2 * p * r / (p + r) for p, r in ((1, 2 / 3), (1 / 3, 1), (1, 0.5))]
    assert results["mouth_f1"] == pytest.approx(np.mean(f1))


def _loop_metrics(pred, target, mask):
    """The eyes / mouth metrics of the real samples, one sample at a time."""
    correct, support = np.zeros(4), np.zeros(4)
    hits, n, predicted = np.zeros(3), np.zeros(3), np.zeros(3)
    for i in np.flatnonzero(mask):
        for label in range(4):
            if target["eyes"][i, label] >= 0:
                support[label] += 1
                correct[label] += (pred["eyes"][i, label] > 0.5) == (target["eyes"][i, label] == 1)
        truth, guess = target["mouth"][i], int(np.argmax(pred["mouth"][i]))
        n[truth] += 1
        predicted[guess] += 1
        hits[truth] += truth == guess
    eyes_acc = correct / support
    mouth_acc = hits / n
    precision, recall = hits / predicted, hits / n
    return {"eyes": np.sum(support * eyes_acc) / np.sum(support), "eyes_per_label": eyes_acc,
            "mouth": np.sum(n * mouth_acc) / np.sum(n), "mouth_per_class": mouth_acc,
            "mouth_f1": np.mean(2 * precision * recall / (precision + recall))}


def test_support_weighted_accuracy_and_f1_against_a_numpy_loop():
    rng = np.random.default_rng(3)
    b = 64
    eyes = rng.integers(0, 2, (b, 4)).astype(np.float32)
    eyes[rng.uniform(size=(b, 4)) < np.array([0.0, 0.3, 0.1, 0.5])] = -1.0   # missing labels: unequal support
    pred = {"eyes": rng.uniform(size=(b, 4)), "mouth": rng.normal(size=(b, 3))}
    target = {"eyes": eyes, "mouth": rng.integers(0, 3, b)}
    mask = (rng.uniform(size=b) < 0.8).astype(np.int32)
    halves = [lm.eval_sums(*jax.tree.map(lambda x: jnp.asarray(x[s]), (pred, target, mask)))
              for s in (slice(0, 40), slice(40, b))]
    results = lm.finalize(jax.tree.map(np.add, *halves))
    expected = _loop_metrics(pred, target, mask)
    assert results["eyes_accuracy"] == pytest.approx(expected["eyes"])
    np.testing.assert_allclose([results[f"eyes_{n}_accuracy"] for n in lm.EYE_LABELS], expected["eyes_per_label"])
    assert results["mouth_accuracy"] == pytest.approx(expected["mouth"])
    np.testing.assert_allclose([results[f"mouth_{n}_accuracy"] for n in lm.MOUTH_LEVELS],
                               expected["mouth_per_class"])
    assert results["mouth_f1"] == pytest.approx(expected["mouth_f1"])


def test_format_table_columns():
    small = {"nme": 2.35, "failure_rate": 1.2, "eyes_accuracy": 0.978, "mouth_accuracy": 0.935,
             "yaw_mae": 2.622, "pitch_mae": 2.793, "roll_mae": 3.186}
    table = lm.format_table(small)
    assert "| 2.35 | 1.20 | 0.978 | 0.935 | (2.622, 2.793, 3.186) |" in table
    assert "Distraction" not in table
    rows = lm.format_table({"small": small, "landmarks only": {"nme": 2.4, "failure_rate": 2.0}})
    assert "| landmarks only | 2.40 | 2.00 | - | - | - |" in rows
