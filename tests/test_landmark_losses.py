"""Driver-monitoring losses (seed 000, Eq. 2.5-2.13) against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import landmark_losses as ll


def test_wing_inside_outside_and_continuous_at_w():
    x = jnp.asarray([1.0, -12.0, 10.0])
    c = 10 - 10 * math.log(6.0)                      # w = 10, eps = 2: C = w - w ln(1 + w / eps)
    np.testing.assert_allclose(ll.wing(x), [10 * math.log(1.5), 12 - c, 10 * math.log(6.0)], rtol=1e-6)
    below = ll.wing(jnp.asarray(10.0 - 1e-4))
    assert abs(float(below) - float(ll.wing(jnp.asarray(10.0)))) < 1e-3


def test_rectified_wing_is_zero_inside_r():
    x = jnp.asarray([0.3, -1.0, 12.0])
    c = 10 - 10 * math.log(1 + 9.5 / 2)
    np.testing.assert_allclose(ll.rectified_wing(x), [0.0, 10 * math.log(1.25), 12 - c], rtol=1e-6)


def test_l1_l2_smooth_l1_summed_over_coordinates():
    pred = jnp.zeros((1, 2, 2))
    target = jnp.asarray([[[0.5, -2.0], [1.0, 0.0]]])
    assert float(ll.landmark_loss(pred, target, "l1")[0]) == pytest.approx(3.5)
    assert float(ll.landmark_loss(pred, target, "l2")[0]) == pytest.approx(0.125 + 2.0 + 0.5)
    assert float(ll.landmark_loss(pred, target, "smooth_l1")[0]) == pytest.approx(0.125 + 1.5 + 0.5)
    with pytest.raises(ValueError, match="huber"):
        ll.landmark_loss(pred, target, "huber")
    with pytest.raises(ValueError, match="shape"):
        ll.landmark_loss(pred, target[:, :1], "l1")


def test_euler_loss_is_circular():
    pred = jnp.asarray([[0.1, 0.0, -3.0]])
    target = jnp.asarray([[0.1 + 2 * math.pi, math.pi / 2, 3.0]])
    # 0 (a full turn apart) + 1 - cos(pi / 2) + 1 - cos(6)
    assert float(ll.euler_loss(pred, target)[0]) == pytest.approx(0.0 + 1.0 + 1 - math.cos(6.0), abs=1e-6)


def test_classification_losses():
    logits = jnp.asarray([[0.0, math.log(3.0)]])     # softmax = (1/4, 3/4)
    labels = jnp.asarray([1])
    ce = -math.log(0.75)
    assert float(ll.cross_entropy(logits, labels)[0]) == pytest.approx(ce)
    assert float(ll.cross_entropy(logits, labels, jnp.asarray([1.0, 2.0]))[0]) == pytest.approx(2 * ce)
    assert float(ll.focal_loss(logits, labels, gamma=2.0)[0]) == pytest.approx(0.25 ** 2 * ce)
    assert float(ll.focal_loss(logits, labels, gamma=0.0)[0]) == pytest.approx(ce)   # gamma 0: cross-entropy
    bce = ll.binary_cross_entropy(jnp.asarray([[0.0, 100.0, -100.0]]), jnp.asarray([[1.0, 1.0, 1.0]]))
    assert float(bce[0]) == pytest.approx(math.log(2.0) + 0.0 + 100.0, rel=1e-6)


def test_total_loss_weights_tasks_and_samples_but_not_distraction():
    per_sample = {"landmarks": jnp.asarray([2.0, 4.0]), "head": jnp.asarray([1.0, 3.0]),
                  "distraction": jnp.asarray([0.5, 1.5])}
    confidence = jnp.asarray([1.0, 0.0])             # the second sample's pseudo-labels are not trusted
    total, terms = ll.total_loss(per_sample, {"landmarks": 2.0, "head": 1.0, "distraction": 0.5}, confidence)
    assert float(terms["landmarks"]) == pytest.approx(2.0 * (2.0 + 0.0) / 2)
    assert float(terms["head"]) == pytest.approx((1.0 + 0.0) / 2)
    assert float(terms["distraction"]) == pytest.approx(0.5 * (0.5 + 1.5) / 2)   # gamma not applied
    assert float(total) == pytest.approx(2.0 + 0.5 + 0.5)
    # gamma = 0 zeroes the sample's gradient for the weighted tasks
    grad = jax.grad(lambda lm: ll.total_loss({"landmarks": lm}, {}, confidence)[0])(jnp.asarray([2.0, 4.0]))
    np.testing.assert_allclose(grad, [0.5, 0.0])
