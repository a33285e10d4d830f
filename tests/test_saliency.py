"""Saliency maps (seed 000, Eq. 2.16-2.18) against closed forms and a slow per-channel loop."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxvision import saliency


def _minmax(x):
    x = np.asarray(x, np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def test_gradient_saliency_of_a_linear_score():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 6, 5, 3)).astype(np.float32)       # K=3 classes, [H, W, C] weights each
    score_fn = lambda x: jnp.einsum("bhwc,khwc->bk", x, w)   # noqa: E731
    images = jnp.asarray(rng.uniform(size=(2, 6, 5, 3)), jnp.float32)
    maps = saliency.gradient_saliency(score_fn, images, jnp.asarray([2, 0]))
    for b, target in enumerate((2, 0)):
        np.testing.assert_allclose(maps[b], _minmax(np.maximum(w[target].max(axis=-1), 0)), atol=1e-6)


def test_grad_cam_of_gap_dense_is_the_class_activation_map():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)   # F itself: features_fn = identity
    w, bias = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    head_fn = lambda f: f.mean(axis=(1, 2)) @ w + bias   # noqa: E731
    maps = saliency.grad_cam(lambda x: x, head_fn, jnp.asarray(features), 1)
    for b in range(2):      # Zhou et al.: CAM = sum_k W_kc F^k (alpha_k = W_kc / hw only rescales it)
        np.testing.assert_allclose(maps[b], _minmax(np.maximum(features[b] @ w[:, 1], 0)), atol=1e-5)


def _score_cam_model(rng):
    a = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)

    def features_fn(x):       # 1x1 conv to 4 channels, then 2x2 average pooling: [B, 4, 4, 4]
        f = jax.nn.relu(x @ a)
        return f.reshape(f.shape[0], 4, 2, 4, 2, 4).mean(axis=(2, 4))

    def score_fn(x):          # a small nonlinear 3-class classifier
        return jnp.tanh(x * 3.0).mean(axis=(1, 2)) @ head

    return features_fn, score_fn


def test_score_cam_matches_a_per_channel_loop():
    rng = np.random.default_rng(2)
    features_fn, score_fn = _score_cam_model(rng)
    images = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
    targets = [2, 1]
    maps = saliency.score_cam(features_fn, score_fn, images, jnp.asarray(targets), batch_size=3)  # 8 pairs
    features = np.asarray(features_fn(images))
    up = lambda m: np.asarray(jax.image.resize(jnp.asarray(m), (8, 8), "bilinear"))   # noqa: E731
    for b, target in enumerate(targets):
        alpha = np.zeros(4)
        for k in range(4):
            mask = _minmax(up(features[b, :, :, k]))
            scores = np.asarray(score_fn(images[b:b + 1] * mask[None, :, :, None].astype(np.float32)))[0]
            alpha[k] = np.exp(scores[target]) / np.exp(scores).sum()
        cam = np.maximum(np.einsum("hwk,k->hw", features[b], alpha), 0)
        np.testing.assert_allclose(maps[b], _minmax(up(cam)), atol=1e-5)


def test_overlay_blends_jet_and_the_grid_png_loads(tmp_path):
    image = np.full((4, 4, 3), 0.5)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    picture = saliency.overlay(image, heat, alpha=0.5)
    assert picture.dtype == np.uint8 and picture.shape == (4, 4, 3)
    # half the grey 127.5 plus half of jet: jet(1) = (0.5, 0, 0) dark red, jet(0) = (0, 0, 0.5) dark blue
    np.testing.assert_array_equal(picture[0, 0], [128, 64, 64])
    np.testing.assert_array_equal(picture[1, 1], [64, 64, 128])

    rng = np.random.default_rng(3)
    images = rng.uniform(size=(2, 32, 32, 3))
    maps = {"gradient": rng.uniform(size=(2, 32, 32)), "score-cam": rng.uniform(size=(2, 32, 32))}
    path = tmp_path / "saliency" / "grid.png"
    saliency.save_saliency_grid(str(path), images, maps, titles=["phone", "normal"])
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (3 * (128 + 4) + 4, 16 + 2 * (128 + 4))
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
