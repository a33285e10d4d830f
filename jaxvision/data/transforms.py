"""Augmentations on example dicts (numpy, one example at a time), consistent across image and labels.

Each transform takes an example {'image' uint8 [H, W, 3], 'semseg' uint8/int [H, W], 'depth' float32 [H, W],
optionally 'boxes' [N, 4] (x1, y1, x2, y2 pixels) and 'lanes' [L, P, 2] (x, y pixels)} and a
`np.random.Generator`, and returns a new dict (the input is not modified). Labels and depth are
resampled with nearest neighbour, so class ids stay valid and invalid depth (<= 0) stays invalid.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IGNORE_LABEL = 255


def hflip(example: dict) -> dict:
    """Mirrors the example left-right (image, semseg, depth, boxes, lanes)."""
    out = dict(example)
    for key in ("image", "semseg", "depth"):
        if key in example:
            out[key] = example[key][:, ::-1]
    width = example["image"].shape[1]
    if "boxes" in example:
        boxes = example["boxes"]
        out["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    if "lanes" in example:
        lanes = example["lanes"].copy()
        lanes[..., 0] = width - lanes[..., 0]
        out["lanes"] = lanes
    return out


def random_hflip(example: dict, rng: np.random.Generator, p: float = 0.5) -> dict:
    """Mirrors the example with probability `p`."""
    return hflip(example) if rng.random() < p else example


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resample_window(array: np.ndarray, scaled: tuple[int, int], window: tuple[int, int, int, int],
                     resample, fill) -> np.ndarray:
    """Resizes `array` to `scaled` = (h, w) and returns the rows/cols `window` = (top, left, height, width) of the
    result, with `fill` where the window leaves the resized image; only the window is computed (PIL `box`)."""
    if array.dtype not in (np.uint8, np.float32):
        raise ValueError(f"transforms: cannot resample a {array.dtype} array; expected uint8 or float32")
    top, left, height, width = window
    sy, sx = scaled[0] / array.shape[0], scaled[1] / array.shape[1]
    r0, r1 = max(top, 0), min(top + height, scaled[0])
    c0, c1 = max(left, 0), min(left + width, scaled[1])
    out = np.full((height, width) + array.shape[2:], fill, array.dtype)
    if r0 < r1 and c0 < c1:
        box = (c0 / sx, r0 / sy, c1 / sx, r1 / sy)
        out[r0 - top:r1 - top, c0 - left:c1 - left] = Image.fromarray(array).resize((c1 - c0, r1 - r0), resample, box)
    return out


def scale_crop(example: dict, scale: float, top: int, left: int) -> dict:
    """Resizes by `scale`, then takes the window of the original size at (top, left) of the resized image.

    Offsets outside the resized image (always the case somewhere for scale < 1) are padded: image 0,
    semseg 255 (ignore), depth 0 (invalid). Image bilinear, labels/depth nearest. Depth is divided by
    `scale`: zooming in by s looks like the scene s times closer to the same camera (Eigen et al., 2014).
    Boxes are moved and clipped (boxes left with no area are dropped, with their classes and occlusion
    flags); lanes are moved but not clipped.
    """
    height, width = example["image"].shape[:2]
    scaled = _scaled_size(height, width, scale)
    sy, sx = scaled[0] / height, scaled[1] / width
    window = (top, left, height, width)
    out = dict(example)
    out["image"] = _resample_window(example["image"], scaled, window, Image.BILINEAR, 0)
    if "semseg" in example:
        out["semseg"] = _resample_window(example["semseg"], scaled, window, Image.NEAREST, IGNORE_LABEL)
    if "depth" in example:
        depth = _resample_window(np.asarray(example["depth"], np.float32), scaled, window, Image.NEAREST, 0.0)
        out["depth"] = depth / np.float32(scale)
    offset = np.array([left, top, left, top], np.float32)
    if "boxes" in example:
        boxes = example["boxes"] * np.array([sx, sy, sx, sy], np.float32) - offset
        boxes = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out["boxes"] = boxes[keep]
        for key in ("box_classes", "box_occluded"):
            if key in example:
                out[key] = example[key][keep]
    if "lanes" in example:
        out["lanes"] = example["lanes"] * np.array([sx, sy], np.float32) - offset[:2]
    return out


def resize(example: dict, height: int, width: int) -> dict:
    """Resizes image (bilinear), semseg and depth (nearest) to `height` x `width`; other keys are dropped.

    Depth values are kept: resizing the whole image changes the focal length in pixels, not the distance
    of the scene (unlike `scale_crop`, which zooms at a fixed field of view). Already that size: not resampled.
    """
    if example["image"].shape[:2] == (height, width):
        return {key: example[key] for key in ("image", "semseg", "depth")}
    full = (height, width)
    window = (0, 0, height, width)
    return {"image": _resample_window(example["image"], full, window, Image.BILINEAR, 0),
            "semseg": _resample_window(example["semseg"], full, window, Image.NEAREST, IGNORE_LABEL),
            "depth": _resample_window(np.asarray(example["depth"], np.float32), full, window, Image.NEAREST, 0.0)}


def random_scale_crop(example: dict, rng: np.random.Generator, scale_range: tuple[float, float]) -> dict:
    """`scale_crop` with a scale uniform in `scale_range` and a uniformly random window position."""
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"transforms: scale_range must satisfy 0 < min <= max, got {tuple(scale_range)}")
    if lo == hi == 1:
        return example
    scale = rng.uniform(lo, hi)
    height, width = example["image"].shape[:2]
    new_h, new_w = _scaled_size(height, width, scale)
    # Zoom in: a window inside the scaled image; zoom out: the scaled image somewhere inside the window.
    top = rng.integers(min(0, new_h - height), max(0, new_h - height) + 1)
    left = rng.integers(min(0, new_w - width), max(0, new_w - width) + 1)
    return scale_crop(example, scale, int(top), int(left))


def color_jitter(example: dict, brightness: float, contrast: float, saturation: float) -> dict:
    """Scales saturation (around each pixel's grey), contrast (around the mean grey), then brightness.

    All three are linear in the pixel, so they are applied as one 3x3 colour matrix plus an offset.
    """
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    image = example["image"]
    mean_grey = float((image @ luma).mean())
    matrix = brightness * contrast * (saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma))
    offset = brightness * (1 - contrast) * mean_grey + 0.5
    out = dict(example)
    out["image"] = np.clip(image.astype(np.float32) @ matrix.T.astype(np.float32) + np.float32(offset), 0, 255
                           ).astype(np.uint8)
    return out


def random_color_jitter(example: dict, rng: np.random.Generator, strength: float) -> dict:
    """`color_jitter` with brightness, contrast and saturation factors uniform in [1 - s, 1 + s]."""
    if strength < 0:
        raise ValueError(f"transforms: color_jitter strength must be >= 0, got {strength}")
    if strength == 0:
        return example
    brightness, contrast, saturation = rng.uniform(max(0.0, 1 - strength), 1 + strength, 3)
    return color_jitter(example, brightness, contrast, saturation)


def augment(example: dict, rng: np.random.Generator, flip: bool, scale_range: tuple[float, float],
            jitter: float) -> dict:
    """Random flip, scale-crop and colour jitter, in that order (each off when flip=False, (1, 1), 0)."""
    if flip:
        example = random_hflip(example, rng)
    example = random_scale_crop(example, rng, scale_range)
    return random_color_jitter(example, rng, jitter)


def to_model_inputs(example: dict) -> dict:
    """{'image' float32 [H, W, 3] in [0, 1], 'semseg' int32 [H, W], 'depth' float32 [H, W]}."""
    return {"image": example["image"].astype(np.float32) * np.float32(1 / 255),
            "semseg": example["semseg"].astype(np.int32),
            "depth": np.asarray(example["depth"], np.float32)}
