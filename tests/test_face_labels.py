"""Label derivation: eye visibility / opening (Eq. 2.3), mouth level and PnP head pose."""

import numpy as np
import pytest

from jaxvision.data import face_labels, face_landmarks
from test_face_roi import face_template, projected_face


@pytest.mark.parametrize("ear, pixels, expected", [
    (0.30, 5.0, (0, 0)),      # too few eye pixels: not visible
    (0.05, 50.0, (0, 0)),     # EAR <= 0.1: not visible
    (0.20, 50.0, (1, 0)),     # visible, P * EAR = 10 <= 13.5: closed
    (0.20, 100.0, (1, 1)),    # visible, P * EAR = 20 > 13.5: open
    (0.10, 500.0, (0, 0)),    # EAR exactly 0.1 is not > 0.1
    (0.27, 50.0, (1, 0)),     # P * EAR = 13.5 exactly is not > 13.5
])
def test_eye_labels_follow_eq_2_3(ear, pixels, expected):
    eyes = face_labels.eye_labels([ear, 0.3], [pixels, 200.0])
    assert eyes.dtype == np.float32 and eyes.shape == (4,)
    np.testing.assert_array_equal(eyes, [*expected, 1, 1])
    np.testing.assert_array_equal(face_labels.eye_labels([0.3, ear], [200.0, pixels]), [1, 1, *expected])


def test_pixel_counts_are_rescaled_to_160():
    label_map = np.zeros((80, 80), np.uint8)
    label_map[:5, :5] = 4                  # 25 px at 80 x 80 = 100 px at 160 x 160
    label_map[10, :3] = 5
    label_map[20:30, 20:30] = 8
    np.testing.assert_allclose(face_labels.class_pixels(label_map, (4, 5, 8)), [100, 12, 400])
    np.testing.assert_allclose(face_labels.class_pixels(label_map[:40], (4,)), [200])  # 25 px of 40 x 80 = 1/8 of 160^2


def eye_crop(size: int, left_pixels: int, right_pixels: int, left_ear: float, right_ear: float):
    """(landmarks in pixels, label map) of a `size` crop with these eye pixel counts and aspect ratios."""
    label_map = np.zeros((size, size), np.uint8)
    label_map.ravel()[:left_pixels] = face_labels.LEFT_EYE_CLASS
    label_map.ravel()[size * size - right_pixels:] = face_labels.RIGHT_EYE_CLASS
    return face_template(left_ear, right_ear) * size, label_map


@pytest.mark.parametrize("size", [80, 160, 320])
def test_derived_eye_labels_hit_every_branch(size):
    scale = (size / 160) ** 2                 # pixel counts given at 160 x 160
    cases = [  # (P left, P right, EAR left, EAR right) -> eyes
        ((8, 200, 0.3, 0.3), [0, 0, 1, 1]),     # left eye occluded (P <= 10)
        ((200, 200, 0.05, 0.3), [0, 0, 1, 1]),  # left EAR too small to be visible
        ((60, 200, 0.2, 0.3), [1, 0, 1, 1]),    # left visible, 60 * 0.2 = 12 <= 13.5: closed
        ((200, 80, 0.3, 0.2), [1, 1, 1, 1]),    # both open (80 * 0.2 = 16 > 13.5)
    ]
    for (p_left, p_right, ear_left, ear_right), expected in cases:
        landmarks, label_map = eye_crop(size, round(p_left * scale), round(p_right * scale), ear_left, ear_right)
        labels = face_labels.derive_labels(landmarks, label_map, size)
        np.testing.assert_array_equal(labels["eyes"], expected)


@pytest.mark.parametrize("mar, pixels, level", [
    (0.0, 0.0, 0), (0.3, 10.0, 0), (0.05, 300.0, 0),   # closed: no inner mouth, or lips (almost) together
    (0.2, 100.0, 1), (0.35, 100.0, 1),                 # semi-open
    (0.6, 400.0, 2),                                   # open
])
def test_mouth_levels(mar, pixels, level):
    assert face_labels.mouth_level(mar, pixels) == level


def test_derived_mouth_label():
    size = 80
    landmarks = face_template(mouth_mar=0.5) * size
    label_map = np.zeros((size, size), np.uint8)
    label_map[40:50, 30:50] = face_labels.INNER_MOUTH_CLASS          # 200 px = 800 px at 160 x 160
    labels = face_labels.derive_labels(landmarks, label_map, size)
    assert labels["mouth"].dtype == np.int32 and labels["mouth"] == 2
    assert face_labels.derive_labels(face_template(mouth_mar=0.2) * size, label_map, size)["mouth"] == 1
    assert face_labels.derive_labels(landmarks, np.zeros_like(label_map), size)["mouth"] == 0


def test_reference_face_is_a_symmetric_head_in_opencv_axes():
    points = face_labels.PNP_POINTS
    assert points.shape == (10, 3) and len(set(face_labels.PNP_INDICES)) == 10
    assert (points[:, 2] < 0).all()                                     # the face's front towards the camera
    left = face_labels.PNP_INDICES[points[:, 0] < 0]
    assert set(left) == {60, 64, 55, 76}                                # image-left landmarks have x < 0
    mirrored = points * [-1, 1, 1]
    flipped = face_landmarks.FLIP_PERMUTATION[face_labels.PNP_INDICES]
    order = [list(face_labels.PNP_INDICES).index(i) for i in flipped]
    np.testing.assert_allclose(mirrored[order], points)                 # mirror image = mirrored indices
    assert points[face_labels.PNP_INDICES == 16, 1] > points[face_labels.PNP_INDICES == 60, 1]   # chin below eyes


def test_pnp_recovers_known_poses():
    rng = np.random.default_rng(0)
    for _ in range(12):
        pose = np.deg2rad([rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(-35, 35)])
        estimate = face_labels.head_pose(projected_face(*pose), 200)
        assert estimate.dtype == np.float32 and estimate.shape == (3,)
        np.testing.assert_allclose(np.rad2deg(estimate), np.rad2deg(pose), atol=1.0)


def test_pnp_sign_conventions():
    """Roll turns the face clockwise on screen, positive yaw turns it towards the image left (its front, -z,
    goes to -x) and the mirror image has (-yaw, pitch, -roll)."""
    frontal = projected_face(0.0, 0.0, 0.0)
    np.testing.assert_allclose(face_labels.head_pose(frontal, 200), 0, atol=1e-4)
    turned = projected_face(0.4, 0.0, 0.0)
    nose, eyes = turned[[55, 59]].mean(0), turned[[60, 64, 68, 72]].mean(0)
    assert nose[0] < eyes[0] - 2
    rolled = face_landmarks.rotate_points(frontal, 0.3, (100, 100))
    np.testing.assert_allclose(face_labels.head_pose(rolled, 200), [0, 0, 0.3], atol=1e-4)
    pose = np.array([0.4, -0.2, 0.25])
    landmarks = projected_face(*pose)
    mirrored = face_labels.head_pose(face_landmarks.flip_landmarks(landmarks, 200), 200)
    np.testing.assert_allclose(mirrored, face_landmarks.flip_pose(pose), atol=1e-3)


def test_pnp_on_a_non_square_image():
    landmarks = projected_face(0.2, 0.1, -0.3, width=240, height=180)
    np.testing.assert_allclose(face_labels.head_pose(landmarks, (240, 180)), [0.2, 0.1, -0.3], atol=1e-3)
