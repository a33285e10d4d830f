"""RoI augmentation of face crops: square box, shift / scale limits, rotation and mirror of image, landmarks
and label map in one warp, photometric augmentation."""

import numpy as np
import pytest

from jaxvision.data import face_labels, face_landmarks, face_roi


def face_template(left_ear: float = 0.3, right_ear: float = 0.3, mouth_mar: float = 0.0) -> np.ndarray:
    """98 WFLW landmarks [98, 2] of a schematic frontal face filling [0, 1]^2 (x at 0 and 1, y at 0 and 1),
    with the given eye aspect ratios (Eq. 2.2) and inner-lip aspect ratio."""
    p = np.zeros((98, 2))
    t = np.linspace(0, np.pi, 33)
    p[0:33] = np.stack([0.5 - 0.5 * np.cos(t), 0.35 + 0.65 * np.sin(t)], -1)       # jaw, chin at y = 1
    p[33:38] = np.stack([np.linspace(0.12, 0.42, 5), [0.06, 0.02, 0.0, 0.02, 0.05]], -1)
    p[38:42] = np.stack([np.linspace(0.40, 0.15, 4), np.full(4, 0.09)], -1)
    p[51:55] = np.stack([np.full(4, 0.5), np.linspace(0.3, 0.55, 4)], -1)
    p[55:58] = np.stack([[0.42, 0.46, 0.5], [0.6, 0.62, 0.63]], -1)
    for i, (centre, ear) in enumerate([((0.3, 0.3), left_ear), ((0.7, 0.3), right_ear)]):
        xs = centre[0] + 0.1 * np.array([-1, -0.5, 0, 0.5, 1, 0.5, 0, -0.5])   # 60 outer, 68 inner corner
        ys = centre[1] + ear * 0.1 * np.array([0, -0.8, -1, -0.8, 0, 0.8, 1, 0.8])  # |62-66| / |60-64| = ear
        p[60 + 8 * i:68 + 8 * i] = np.stack([xs, ys], -1)
        p[96 + i] = centre
    p[76:83] = np.stack([np.linspace(0.35, 0.65, 7), [0.78, 0.74, 0.73, 0.74, 0.73, 0.74, 0.78]], -1)
    p[83:88] = np.stack([np.linspace(0.6, 0.4, 5), [0.84, 0.86, 0.87, 0.86, 0.84]], -1)
    p[88:93] = np.stack([np.linspace(0.38, 0.62, 5), 0.8 - mouth_mar * 0.12 * np.array([0, 0.8, 1, 0.8, 0])], -1)
    p[93:96] = np.stack([np.linspace(0.56, 0.44, 3), 0.8 + mouth_mar * 0.12 * np.array([0.8, 1, 0.8])], -1)
    # Right brow and right nostrils mirror the left ones.
    for i in [*range(42, 51), 58, 59]:
        p[i] = (1 - p[face_landmarks.FLIP_PERMUTATION[i], 0], p[face_landmarks.FLIP_PERMUTATION[i], 1])
    return p.astype(np.float32)


def blob_image(points: np.ndarray, height: int, width: int, sigma: float = 1.5) -> np.ndarray:
    """float32 [H, W, 3]: a Gaussian blob per channel centred on each of 3 points (+0.5-centred pixels)."""
    y, x = np.mgrid[:height, :width] + 0.5
    blobs = [np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma ** 2)) for px, py in points]
    return np.stack(blobs, -1).astype(np.float32)


def centroids(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) of each channel of [H, W, C], in +0.5-centred pixels: [C, 2]."""
    y, x = np.mgrid[:image.shape[0], :image.shape[1]] + 0.5
    w = np.where(image > 0.05, image, 0)
    return np.stack([(w * x[..., None]).sum((0, 1)), (w * y[..., None]).sum((0, 1))], -1) / w.sum((0, 1))[:, None]


def test_eval_crop_is_the_square_around_the_landmarks():
    landmarks = face_template() * np.float32([40, 30]) + np.float32([10, 20])     # box 40 x 30 at (10, 20)
    image = np.zeros((70, 60, 3), np.uint8)
    crop, points, labels, applied = face_roi.crop_face(image, landmarks, None, 80, None, face_roi.EVAL)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8 and labels is None
    assert applied["angle"] == 0.0 and not applied["flipped"]
    # Square side 40 (the longer side), same centre (30, 35): x spans the crop, y is centred in it.
    np.testing.assert_allclose(points.min(0), [0, 10], atol=1e-4)
    np.testing.assert_allclose(points.max(0), [80, 70], atol=1e-4)
    np.testing.assert_allclose(applied["matrix"], [[2, 0, -20], [0, 2, -30], [0, 0, 1]], atol=1e-9)


def test_eval_crop_with_unit_scale_copies_the_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 50, 3), np.uint8)
    label_map = rng.integers(0, 11, (60, 50), np.uint8)
    landmarks = face_template() * 32 + np.float32([7, 11])
    crop, points, labels, _ = face_roi.crop_face(image, landmarks, label_map, 32, None, face_roi.EVAL)
    np.testing.assert_array_equal(crop, image[11:43, 7:39])
    np.testing.assert_array_equal(labels, label_map[11:43, 7:39])
    np.testing.assert_allclose(points, landmarks - np.float32([7, 11]), atol=1e-4)


def test_outside_the_image_is_black_and_background():
    image = np.full((40, 40, 3), 200, np.uint8)
    label_map = np.full((40, 40), 1, np.uint8)
    landmarks = face_template() * 30 - 10                                           # box from -10 to 20
    crop, _, labels, _ = face_roi.crop_face(image, landmarks, label_map, 30, None, face_roi.EVAL)
    assert (crop[:10, :10] == 0).all() and (labels[:10, :10] == 0).all()
    assert (crop[12:, 12:] == 200).all() and (labels[12:, 12:] == 1).all()


@pytest.mark.parametrize("seed", range(3))
def test_shift_and_scale_keep_every_landmark_inside(seed):
    rng = np.random.default_rng(seed)
    augment = face_roi.RoIAugment(shift=(0.0, 1.0), scale=(1.0, 1.1))
    image = np.zeros((100, 120, 3), np.uint8)
    for _ in range(200):
        landmarks = face_template() * rng.uniform(20, 60, 2) + rng.uniform(0, 40, 2)
        _, points, _, _ = face_roi.crop_face(image, landmarks, None, 64, rng, augment)
        assert points.min() >= -1e-3 and points.max() <= 64 + 1e-3


def test_full_shift_puts_landmarks_on_the_crop_border():
    rng = np.random.default_rng(1)
    augment = face_roi.RoIAugment(shift=(1.0, 1.0), scale=(1.1, 1.1))
    image = np.zeros((100, 100, 3), np.uint8)
    landmarks = face_template() * np.float32([50, 40]) + 20
    for _ in range(20):
        _, points, _, _ = face_roi.crop_face(image, landmarks, None, 64, rng, augment)
        # On each axis the landmarks touch one side of the crop (the whole slack is used).
        touches = np.isclose(points.min(0), 0, atol=1e-3) | np.isclose(points.max(0), 64, atol=1e-3)
        assert touches.all()
        np.testing.assert_allclose(points.max(0) - points.min(0), np.array([50, 40]) * 64 / 55, rtol=1e-4)


def test_flip_is_an_involution():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 50, (98, 2)).astype(np.float32) + 0.5         # exact in float32
    np.testing.assert_allclose(face_landmarks.flip_landmarks(face_landmarks.flip_landmarks(points, 50), 50), points)
    label_map = rng.integers(0, 11, (20, 30), np.uint8)
    np.testing.assert_array_equal(face_roi.flip_label_map(face_roi.flip_label_map(label_map)), label_map)
    flipped = face_roi.flip_label_map(np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], np.uint8))
    np.testing.assert_array_equal(flipped, [[10, 9, 8, 7, 6, 4, 5, 2, 3, 1, 0]])


def test_flipped_crop_mirrors_image_landmarks_and_labels():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (70, 60, 3), np.uint8)
    label_map = rng.integers(0, 11, (70, 60), np.uint8)
    landmarks = face_template() * 40 + np.float32([9, 14])
    plain = face_roi.crop_face(image, landmarks, label_map, 48, np.random.default_rng(0), face_roi.EVAL)
    mirrored = face_roi.crop_face(image, landmarks, label_map, 48, np.random.default_rng(0),
                                  face_roi.RoIAugment(flip_prob=1.0))
    assert mirrored[3]["flipped"]
    np.testing.assert_array_equal(mirrored[0], plain[0][:, ::-1])
    np.testing.assert_allclose(mirrored[1], face_landmarks.flip_landmarks(plain[1], 48), atol=1e-4)
    np.testing.assert_array_equal(mirrored[2], face_roi.flip_label_map(plain[2]))


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_landmarks_stay_on_the_warped_content(flip_prob):
    """A blob drawn at three landmarks is found, after scale, shift, rotation and flip, at their new positions."""
    rng = np.random.default_rng(7)
    augment = face_roi.RoIAugment(shift=(0.0, 1.0), scale=(1.0, 1.1), max_rotation=35.0, flip_prob=flip_prob)
    landmarks = face_template() * 60 + 20
    marked = [60, 76, 54]                                     # left eye corner, left mouth corner, nose tip
    image = blob_image(landmarks[marked], 100, 100)
    for _ in range(5):
        crop, points, _, applied = face_roi.crop_face(image, landmarks, None, 64, rng, augment)
        assert applied["flipped"] == bool(flip_prob) and abs(applied["angle"]) <= np.deg2rad(35)
        expected = points[face_landmarks.FLIP_PERMUTATION[marked] if applied["flipped"] else marked]
        np.testing.assert_allclose(centroids(crop), expected, atol=0.1)
        # The reported matrix maps image coordinates to crop coordinates.
        ones = np.ones((3, 1))
        mapped = (np.hstack([landmarks[marked], ones]) @ applied["matrix"].T)[:, :2]
        np.testing.assert_allclose(mapped, expected, atol=1e-3)


def projected_face(yaw, pitch, roll, width=200, height=200, distance=500.0) -> np.ndarray:
    """98 landmarks [98, 2] whose PnP points are the reference face at this pose projected by the camera
    of `face_labels.head_pose`; the other points are spread inside their box."""
    camera = (face_labels.PNP_POINTS @ face_landmarks.euler_to_matrix(yaw, pitch, roll).T) + [0, 0, distance]
    uv = camera @ face_labels.camera_matrix((width, height)).T
    uv = uv[:, :2] / uv[:, 2:]
    landmarks = np.random.default_rng(0).uniform(uv.min(0), uv.max(0), (98, 2))
    landmarks[face_labels.PNP_INDICES] = uv
    return landmarks.astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_rotating_the_crop_adds_its_angle_to_the_roll(seed):
    rng = np.random.default_rng(seed)
    landmarks = projected_face(*np.deg2rad(rng.uniform(-25, 25, 3)))
    image = np.zeros((200, 200, 3), np.uint8)
    _, upright, _, _ = face_roi.crop_face(image, landmarks, None, 160, None, face_roi.EVAL)
    _, rotated, _, applied = face_roi.crop_face(image, landmarks, None, 160, rng,
                                                face_roi.RoIAugment(max_rotation=35.0))
    before, after = face_labels.head_pose(upright, 160), face_labels.head_pose(rotated, 160)
    assert abs(applied["angle"]) > 0
    np.testing.assert_allclose(np.rad2deg(after), np.rad2deg(before + [0, 0, applied["angle"]]), atol=1.0)


def test_photometric_augment_is_a_valid_random_image():
    image = np.random.default_rng(0).uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    out = face_roi.photometric_augment(image, np.random.default_rng(5))
    again = face_roi.photometric_augment(image, np.random.default_rng(5))
    other = face_roi.photometric_augment(image, np.random.default_rng(6))
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, again)
    assert np.abs(out - image).mean() > 1e-3 and np.abs(out - other).mean() > 1e-3
    # Clipping: a saturated image stays in range.
    assert face_roi.photometric_augment(np.ones((8, 8, 3), np.float32), np.random.default_rng(1)).max() <= 1.0


@pytest.mark.parametrize("size", [160, 320])
def test_blur_is_the_same_fraction_of_the_crop_at_every_size(monkeypatch, size):
    """Only the blur left on (sigma 1.2 px at 160): an impulse spreads to a Gaussian of variance (1.2 size/160)^2."""
    for name, value in dict(BRIGHTNESS=0.0, CONTRAST=(1.0, 1.0), CHANNEL_GAIN=(1.0, 1.0), SATURATION=(1.0, 1.0),
                            NOISE_STD=(0.0, 0.0), BLUR_PROB=1.0, BLUR_SIGMA=(1.2, 1.2)).items():
        monkeypatch.setattr(face_roi, name, value)
    image = np.zeros((size, size, 3), np.float32)
    image[size // 2, size // 2] = 1.0
    out = face_roi.photometric_augment(image, np.random.default_rng(0))[..., 0]
    offsets = np.arange(size) - size // 2
    variance = (out.sum(0) * offsets ** 2).sum() / out.sum()
    np.testing.assert_allclose(variance, (1.2 * size / 160) ** 2, rtol=0.05)


def test_degenerate_landmarks_are_an_error():
    with pytest.raises(ValueError, match="landmarks span no area"):
        face_roi.crop_face(np.zeros((10, 10, 3), np.uint8), np.full((98, 2), 5.0), None, 16, None)
