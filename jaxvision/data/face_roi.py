"""RoI augmentation of face crops (thesis Sec. 2.3.2, Fig. 2.7, Table 2.2) and online appearance augmentation.

The crop is built from the landmarks: the minimal box enclosing them is made square (same centre, side =
the longer side), enlarged by a scale factor, shifted by a fraction of the slack that still keeps every
landmark inside, then cropped and resized to `size`. The crop may further be rotated about its centre
and mirrored. Crop, resize and rotation are one 2x3 affine, so the image (bilinear) and the label map
(nearest) are each resampled once (the mirror is an exact column reversal); pixels from outside the image
are 0 (black / background).

Coordinates are continuous pixel coordinates: pixel (col, row) covers [col, col + 1) x [row, row + 1), so
its centre is at +0.5, an image of width W spans [0, W] (as in `face_landmarks.flip_landmarks`) and crop
coordinates divided by `size` are in [0, 1]. OpenCV samples at integer pixel centres; `_cv_matrix` converts.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from jaxvision.data import face_landmarks

# LaPa label-map classes that swap under a horizontal flip: brows 2 <-> 3, eyes 4 <-> 5.
_FLIP_CLASSES = np.arange(256, dtype=np.uint8)
_FLIP_CLASSES[[2, 3, 4, 5]] = [3, 2, 5, 4]


@dataclasses.dataclass(frozen=True)
class RoIAugment:
    """Ranges of the spatial augmentation, each drawn uniformly (Table 2.2).

    shift: fraction of the slack (how far the square can move with every landmark still inside) by which
      it is moved, drawn per axis in this range, in a random direction per axis.
    scale: factor applied to the side of the square around the landmarks.
    max_rotation: rotation of the crop about its centre, in degrees, drawn in [-max, max].
    flip_prob: probability of a horizontal mirror.
    """

    shift: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    max_rotation: float = 0.0
    flip_prob: float = 0.0


TRAIN = RoIAugment(shift=(0.0, 1.0), scale=(1.0, 1.1), max_rotation=35.0, flip_prob=0.5)
EVAL = RoIAugment()


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _cv_matrix(matrix: np.ndarray) -> np.ndarray:
    """2x3 matrix for cv2.warpAffine (integer pixel centres) of a 3x3 map in +0.5-centred coordinates."""
    return (_translation(-0.5, -0.5) @ matrix @ _translation(0.5, 0.5))[:2]


def _draw(rng: np.random.Generator | None, low: float, high: float) -> float:
    """Uniform draw in [low, high]; the low end without an rng."""
    return float(low) if rng is None else float(rng.uniform(low, high))


def _square_box(landmarks: np.ndarray, rng, augment: RoIAugment) -> tuple[np.ndarray, float]:
    """(centre [2], side) of the augmented square RoI around `landmarks` [N, 2]."""
    low, high = landmarks.min(0).astype(np.float64), landmarks.max(0).astype(np.float64)
    extent = high - low
    if extent.max() <= 0:
        raise ValueError(f"landmarks span no area: all at {low.tolist()}")
    side = extent.max() * _draw(rng, *augment.scale)
    slack = (side - extent) / 2          # how far the centre may move per axis, landmarks staying inside
    fraction = np.array([_draw(rng, *augment.shift) for _ in range(2)])
    direction = np.ones(2) if rng is None else rng.choice([-1.0, 1.0], size=2)
    return (low + high) / 2 + direction * fraction * slack, side


def _rotation(angle: float, centre: float) -> np.ndarray:
    """3x3 map rotating by `angle` rad about (centre, centre), clockwise on screen (`rotate_points`)."""
    rotate = np.eye(3)
    rotate[:2, :2] = face_landmarks.rotation_2d(angle)
    return _translation(centre, centre) @ rotate @ _translation(-centre, -centre)


def crop_face(image: np.ndarray, landmarks_px: np.ndarray, label_map: np.ndarray | None, size: int,
              rng: np.random.Generator | None, augment: RoIAugment = EVAL):
    """Augmented square face crop of `size` x `size` around the 98 WFLW `landmarks_px` [98, 2].

    image [H, W, 3] (dtype kept); label_map [H, W] uint8 LaPa classes or None. Without `rng` every range
    takes its low end and there is no rotation or flip. Returns (crop [size, size, 3], landmarks [98, 2]
    float32 in crop pixels, label crop [size, size] uint8 or None, applied) with applied = {'angle': rotation
    in rad, 'flipped': bool, 'matrix': 3x3 map from image to crop coordinates}. The rotation comes before
    the mirror, so the crop's pose is the image's with `angle` added to roll, then `flip_pose` if flipped.
    """
    landmarks_px = np.asarray(landmarks_px, np.float32)
    centre, side = _square_box(landmarks_px, rng, augment)
    angle = 0.0 if rng is None else np.deg2rad(rng.uniform(-augment.max_rotation, augment.max_rotation))
    flipped = rng is not None and bool(rng.random() < augment.flip_prob)

    crop = np.diag([size / side, size / side, 1.0]) @ _translation(*(side / 2 - centre))
    points = face_landmarks.rotate_points(landmarks_px @ crop[:2, :2].T + crop[:2, 2], angle, (size / 2, size / 2))
    matrix = _rotation(angle, size / 2) @ crop

    # The mirror x -> size - x samples exactly the reversed columns, so it is applied by reversal.
    warp = dict(dsize=(size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out_image = cv2.warpAffine(image, _cv_matrix(matrix), flags=cv2.INTER_LINEAR, **warp)
    out_labels = None if label_map is None else cv2.warpAffine(
        label_map, _cv_matrix(matrix), flags=cv2.INTER_NEAREST, **warp)
    if flipped:
        points = face_landmarks.flip_landmarks(points, size)
        out_image = np.ascontiguousarray(out_image[:, ::-1])
        out_labels = None if out_labels is None else flip_label_map(out_labels)
        matrix = np.array([[-1, 0, size], [0, 1, 0], [0, 0, 1]], np.float64) @ matrix
    return out_image, points, out_labels, {"angle": float(angle), "flipped": flipped, "matrix": matrix}


def flip_label_map(label_map: np.ndarray) -> np.ndarray:
    """Mirrored LaPa label map: columns reversed, left/right brows (2, 3) and eyes (4, 5) swapped."""
    return np.ascontiguousarray(_FLIP_CLASSES[label_map[:, ::-1]])


# Online appearance augmentation (Sec. 2.3.2: brightness and contrast, colour jitter, blur, Gaussian noise).
BRIGHTNESS = 0.15          # additive offset drawn in [-B, B]
CONTRAST = (0.7, 1.3)      # factor about the image mean
CHANNEL_GAIN = (0.9, 1.1)  # per-channel colour gain
SATURATION = (0.7, 1.3)    # factor about the per-pixel grey level
BLUR_PROB, BLUR_SIGMA = 0.3, (0.3, 1.5)   # sigma in pixels of a BLUR_REFERENCE_SIZE crop, scaled to the image
BLUR_REFERENCE_SIZE = 160                  # the thesis' input side
NOISE_STD = (0.0, 0.03)


def photometric_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness/contrast, colour jitter, Gaussian blur (sometimes) and Gaussian noise of a float
    image [H, W, 3] in [0, 1]; float32 clipped to [0, 1]. The blur is the same fraction of the face at every
    crop size: its sigma is drawn for a 160-pixel crop and scaled by H / 160."""
    x = np.asarray(image, np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(*CONTRAST) + mean + rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    x = x * rng.uniform(*CHANNEL_GAIN, size=3).astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(*SATURATION)
    if rng.random() < BLUR_PROB:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*BLUR_SIGMA) * x.shape[0] / BLUR_REFERENCE_SIZE)
    x = x + rng.normal(0.0, rng.uniform(*NOISE_STD), x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)
