"""The 98-point WFLW face layout, its mirror permutation, and the head-pose convention of the DMS model.

Layout (image-left first; "left" means the left side of the image, the subject's right):
  0-32 jaw contour, left to right; 33-41 left brow (33-37 upper edge outer to inner, 38-41 lower edge inner
  to outer); 42-50 right brow (42-46 upper inner to outer, 47-50 lower outer to inner); 51-54 nose bridge,
  top down; 55-59 nostril line, left to right; 60-67 left eye (60 outer corner, 61-63 upper lid, 64 inner
  corner, 65-67 lower lid); 68-75 right eye (68 inner corner, 69-71 upper lid, 72 outer corner, 73-75 lower
  lid); 76-87 outer lip (76 left corner, 77-81 upper, 82 right corner, 83-87 lower); 88-95 inner lip
  (88 left corner, 89-91 upper, 92 right corner, 93-95 lower); 96 left pupil, 97 right pupil.

Head pose: Euler angles (yaw, pitch, roll) in radians with R = Rz(roll) @ Ry(yaw) @ Rx(pitch) mapping head
coordinates to camera coordinates. Both frames are OpenCV's: x right, y down, z forward (away from the
camera); a frontal face has R = I and looks at the camera along -z. With y down, Rz(a) turns image content
clockwise on screen by a, so rotating a crop by a about its centre (`rotate_points`) adds a to roll and
leaves yaw and pitch unchanged. Mirroring the crop (x -> -x) negates yaw and roll.

Eye labels are ordered (left visible, left open, right visible, right open), left = landmarks 60-67.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 98
JAW = tuple(range(0, 33))
LEFT_BROW, RIGHT_BROW = tuple(range(33, 42)), tuple(range(42, 51))
NOSE = tuple(range(51, 60))
LEFT_EYE, RIGHT_EYE = tuple(range(60, 68)), tuple(range(68, 76))
OUTER_LIP, INNER_LIP = tuple(range(76, 88)), tuple(range(88, 96))
LEFT_PUPIL, RIGHT_PUPIL = 96, 97

# (corner, top, corner, bottom) of each eye: P1..P4 of Eq. 2.2 are top, corner, bottom, corner.
LEFT_EYE_QUAD = (60, 62, 64, 66)
RIGHT_EYE_QUAD = (68, 70, 72, 74)
# Mouth: inner-lip corners and inner-lip middle top / bottom.
MOUTH_QUAD = (88, 90, 92, 94)
EYE_LABELS = ("left_visible", "left_open", "right_visible", "right_open")
MOUTH_LEVELS = ("closed", "semi_open", "open")
DISTRACTION_CLASSES = ("normal", "phone", "smoking")


def _mirror_pairs() -> list[tuple[int, int]]:
    pairs = [(i, 32 - i) for i in range(17)]                                   # jaw
    pairs += [(33 + i, 46 - i) for i in range(5)] + [(38 + i, 50 - i) for i in range(4)]  # brows
    pairs += [(51 + i, 51 + i) for i in range(4)] + [(55 + i, 59 - i) for i in range(3)]  # nose
    pairs += [(60 + i, 72 - i) for i in range(5)] + [(65 + i, 75 - i) for i in range(3)]  # eyes
    pairs += [(76 + i, 82 - i) for i in range(4)] + [(83 + i, 87 - i) for i in range(3)]  # outer lip
    pairs += [(88 + i, 92 - i) for i in range(3)] + [(93 + i, 95 - i) for i in range(2)]  # inner lip
    pairs += [(96, 97)]
    return pairs


def _flip_permutation() -> np.ndarray:
    perm = np.full(NUM_LANDMARKS, -1, np.int64)
    for a, b in _mirror_pairs():
        perm[a], perm[b] = b, a
    assert (perm >= 0).all()
    return perm


# landmarks_mirrored = mirror_x(landmarks)[FLIP_PERMUTATION]; applying it twice is the identity.
FLIP_PERMUTATION = _flip_permutation()
# Eye labels after a mirror: left and right swap.
EYE_FLIP_PERMUTATION = np.array([2, 3, 0, 1])


def flip_landmarks(points: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Landmarks [..., 98, 2] of the horizontally mirrored image (x -> width - x, indices remapped)."""
    mirrored = np.asarray(points, np.float32).copy()
    mirrored[..., 0] = width - mirrored[..., 0]
    return mirrored[..., FLIP_PERMUTATION, :]


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of the mirrored image: yaw and roll change sign."""
    yaw, pitch, roll = np.asarray(pose, np.float32)
    return np.array([-yaw, pitch, -roll], np.float32)


def rotation_2d(angle: float) -> np.ndarray:
    """2x2 rotation of image coordinates (y down) by `angle` rad, clockwise on screen: the xy block of Rz."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]], np.float64)


def rotate_points(points: np.ndarray, angle: float, center) -> np.ndarray:
    """Points [..., 2] rotated by `angle` rad about `center` (clockwise on screen; adds `angle` to roll)."""
    pts = np.asarray(points, np.float64)
    center = np.asarray(center, np.float64)
    return ((pts - center) @ rotation_2d(angle).T + center).astype(np.float32)


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch) (head -> camera, OpenCV axes)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def matrix_to_euler(r: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of R = Rz(roll) Ry(yaw) Rx(pitch), yaw in [-pi/2, pi/2]."""
    r = np.asarray(r, np.float64)
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.array([yaw, pitch, roll], np.float32)


def _aspect_ratio(points: np.ndarray, quad: tuple[int, int, int, int]) -> np.ndarray:
    """|top - bottom| / (|corner - corner| + 1e-3) over the last two axes [..., 98, 2] -> [...]."""
    pts = np.asarray(points, np.float64)
    c1, top, c2, bottom = (pts[..., i, :] for i in quad)
    return np.linalg.norm(top - bottom, axis=-1) / (np.linalg.norm(c1 - c2, axis=-1) + 1e-3)


def eye_aspect_ratios(points: np.ndarray) -> np.ndarray:
    """EAR of Eq. 2.2 for the left and right eye: [..., 2]. Scale-free, so pixels or [0, 1] both work."""
    return np.stack([_aspect_ratio(points, LEFT_EYE_QUAD), _aspect_ratio(points, RIGHT_EYE_QUAD)], -1)


def mouth_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """Inner-lip opening over inner-lip width, [...]."""
    return _aspect_ratio(points, MOUTH_QUAD)
