"""Saliency maps of seed 000, section 2.4.1: gradient (Eq. 2.16), Grad-CAM and Score-CAM (Eq. 2.17-2.18).

Generic: the model enters as plain functions of NHWC float images, e.g. a Flax model in eval mode,
`score_fn = lambda x: model.apply(variables, x, train=False)[:, logits_slice]`. `target` is one class
index for the whole batch or one per image [B]. Every map is [B, H, W] at the image size, min-max normalised
to [0, 1] per image (a constant map becomes 0). `overlay` and `save_saliency_grid` draw them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxvision.fileio import atomic_path

OVERLAY_COLORMAP = "jet"
GRID_PAD = 4
GRID_TITLE_HEIGHT = 16
GRID_MIN_TILE_WIDTH = 128   # smaller images are enlarged (nearest) by an integer factor


def normalize(maps: jax.Array) -> jax.Array:
    """Min-max normalisation to [0, 1] over all axes but the first; constant maps become 0."""
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


def _targets(target, batch_size: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (batch_size,))


def _target_score(scores: jax.Array, target: jax.Array) -> jax.Array:
    """sum_b scores[b, target_b]: its gradient holds each image's own d score_target / d input."""
    return jnp.take_along_axis(scores, target[:, None], axis=1).sum()


def _upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[B, h, w, ...] -> [B, H, W, ...] bilinearly (half-pixel centres); the identity when the size matches."""
    if maps.shape[1:3] == tuple(size):
        return maps
    return jax.image.resize(maps, (maps.shape[0], *size, *maps.shape[3:]), "bilinear")


def _cam(features: jax.Array, alpha: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Eq. 2.17: ReLU(sum_k alpha_k F^k) for F [B, h, w, k], alpha [B, k]; upsampled to `size`, normalised."""
    cam = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", features, alpha))
    return normalize(_upsample(cam, size))


def gradient_saliency(score_fn, images: jax.Array, target) -> jax.Array:
    """Eq. 2.16: ReLU(d O_target / d I), the maximum over the colour channels, normalised per image."""
    target = _targets(target, images.shape[0])
    grads = jax.grad(lambda x: _target_score(score_fn(x), target))(images)
    return normalize(jax.nn.relu(grads).max(axis=-1))


def grad_cam(features_fn, head_fn, images: jax.Array, target) -> jax.Array:
    """Grad-CAM (Selvaraju et al. 2017): Eq. 2.17 with alpha_k the spatial mean of d O_target / d F^k.

    F = features_fn(images) [B, h, w, k] and O = head_fn(F) [B, K] split the model at the feature map."""
    target = _targets(target, images.shape[0])
    features = features_fn(images)
    grads = jax.grad(lambda f: _target_score(head_fn(f), target))(features)
    return _cam(features, grads.mean(axis=(1, 2)), images.shape[1:3])


def score_cam(features_fn, score_fn, images: jax.Array, target, batch_size: int = 32) -> jax.Array:
    """Score-CAM (Wang et al. 2020) as Eq. 2.18 writes it: Eq. 2.17 with alpha_k = softmax(score_fn(I o H^k))_c.

    H^k = s(Up(F^k)) is channel k of F = features_fn(images) bilinearly upsampled to the image size and
    min-max normalised into [0, 1] per image; I o H^k masks every colour channel of I with it. The softmax is
    over the K classes of score_fn's output (not over the channels): alpha_k is the probability of the target
    class c given only the region channel k highlights. Score-CAM's paper subtracts the score of a baseline
    image; Eq. 2.18 and the authors' code do not. score_fn should return the logits of one classifier (e.g.
    the 3 distraction logits of the DMS vector), as the softmax couples its outputs. The B * k masked images
    are scored in batches of `batch_size` under one `jax.jit`.
    """
    target = _targets(target, images.shape[0])
    return jax.jit(lambda x, t: _score_cam(features_fn, score_fn, x, t, batch_size))(images, target)


def _score_cam(features_fn, score_fn, images, target, batch_size):
    features = features_fn(images)
    num_images, num_channels = features.shape[0], features.shape[-1]
    total = num_images * num_channels
    pairs = jnp.arange(-(-total // batch_size) * batch_size) % total   # (image, channel) pairs, last batch padded

    def scores(pair):
        image, channel = pair // num_channels, pair % num_channels
        masks = normalize(_upsample(features[image, :, :, channel][..., None], images.shape[1:3]))
        probs = jax.nn.softmax(score_fn(images[image] * masks), axis=-1)
        return jnp.take_along_axis(probs, target[image][:, None], axis=1)[:, 0]

    alpha = jax.lax.map(scores, pairs.reshape(-1, batch_size)).reshape(-1)[:total]
    return _cam(features, alpha.reshape(num_images, num_channels), images.shape[1:3])


def overlay(image, saliency, alpha: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3]: the image [H, W, 3] in [0, 1] blended with the 'jet' colours of saliency [H, W] in [0, 1]."""
    from matplotlib import colormaps

    image = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    saliency = np.clip(np.asarray(saliency, np.float64), 0.0, 1.0)
    if image.shape != saliency.shape + (3,):
        raise ValueError(f"overlay: image {image.shape} and saliency {saliency.shape} differ in size")
    heat = colormaps[OVERLAY_COLORMAP](saliency)[..., :3]
    return ((1.0 - alpha) * image * 255.0 + alpha * heat * 255.0 + 0.5).astype(np.uint8)


def save_saliency_grid(path: str, images, maps_by_method: dict, titles=None, alpha: float = 0.5) -> None:
    """PNG with one row per image: the input, then its overlay for each method (column titles = the keys).

    images [B, H, W, 3] in [0, 1]; maps_by_method {name: [B, H, W]}; titles: optional caption per row (e.g.
    the predicted class), written over the input tile. Written atomically."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"save_saliency_grid: images must be [B, H, W, 3], got {images.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"save_saliency_grid: {len(titles)} titles for {len(images)} images")
    height, width = images.shape[1:3]
    zoom = -(-GRID_MIN_TILE_WIDTH // width)
    tile_w, tile_h = width * zoom, height * zoom
    columns = ["input", *maps_by_method]
    canvas = Image.new("RGB", (len(columns) * (tile_w + GRID_PAD) + GRID_PAD,
                               GRID_TITLE_HEIGHT + len(images) * (tile_h + GRID_PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for col, name in enumerate(columns):
        draw.text((GRID_PAD + col * (tile_w + GRID_PAD), 2), name, fill="black", font=font)
    for row, image in enumerate(images):
        tiles = [(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)]
        tiles += [overlay(image, np.asarray(maps)[row], alpha) for maps in maps_by_method.values()]
        top = GRID_TITLE_HEIGHT + row * (tile_h + GRID_PAD)
        for col, tile in enumerate(tiles):
            picture = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(picture, (GRID_PAD + col * (tile_w + GRID_PAD), top))
        if titles is not None:
            draw.text((GRID_PAD + 2, top + 2), str(titles[row]), fill="white", font=font, stroke_width=1,
                      stroke_fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
