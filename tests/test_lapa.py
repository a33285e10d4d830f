"""LaPa reader on a tiny fixture in the real on-disk layout: 106 -> 98 mapping, examples, determinism, errors."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import face_landmarks, face_roi, lapa
from test_face_roi import face_template

H, W, SIZE = 80, 64, 48
BOX = np.float32([8, 16])                   # landmarks span [8, 56] x [16, 64]: a 48 x 48 square
LEFT_EYE = (slice(29, 33), slice(18, 27))   # 36 px of class 4 around the image-left eye; right eye occluded

# LaPa's mirror pairs (MMPose configs/_base_/datasets/lapa.py `swap` entries).
LAPA_MIRROR_PAIRS = ([(i, 32 - i) for i in range(16)] + [(33 + i, 46 - i) for i in range(5)]
                     + [(38 + i, 50 - i) for i in range(4)] + [(55 + i, 65 - i) for i in range(5)]
                     + [(66 + i, 79 - i) for i in range(5)] + [(71, 82), (72, 81), (73, 80), (74, 83)]
                     + [(84, 90), (85, 89), (86, 88), (91, 95), (92, 94), (96, 100), (97, 99), (101, 103),
                        (104, 105)])


def fixture_arrays(k: int):
    """(RGB image, 106 landmarks, label map) of fixture image k: a grey face, its left eye white."""
    landmarks = face_template(0.3, 0.3) * SIZE + BOX
    points = np.zeros((106, 2), np.float32)
    points[lapa.LAPA_TO_WFLW] = landmarks
    points[[55, 56, 57, 63, 64, 65]] = landmarks[[51, 55, 56, 58, 59, 53]]    # the dropped nose points
    points[[74, 83]] = landmarks[[96, 97]]
    image = np.full((H, W, 3), 60 + 10 * k, np.uint8)
    image[LEFT_EYE] = 255
    label_map = np.zeros((H, W), np.uint8)
    label_map[16:64, 8:56] = 1                                                # skin
    label_map[LEFT_EYE] = 4
    return image, points, label_map


def write_example(root, split, name, image, points, label_map):
    for folder in ("images", "landmarks", "labels"):
        os.makedirs(f"{root}/{split}/{folder}", exist_ok=True)
    Image.fromarray(image).save(f"{root}/{split}/images/{name}.jpg", quality=95)
    Image.fromarray(label_map).save(f"{root}/{split}/labels/{name}.png")
    with open(f"{root}/{split}/landmarks/{name}.txt", "w") as f:
        f.write("106\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in points))


@pytest.fixture
def root(tmp_path):
    for k, name in enumerate(["a", "b", "c"]):
        write_example(tmp_path, "train", name, *fixture_arrays(k))
    write_example(tmp_path, "val", "v", *fixture_arrays(3))
    return str(tmp_path)


def test_mapping_keeps_98_distinct_points_and_carries_the_mirror():
    assert lapa.LAPA_TO_WFLW.shape == (98,) and len(set(lapa.LAPA_TO_WFLW)) == 98
    assert lapa.LAPA_TO_WFLW.min() >= 0 and lapa.LAPA_TO_WFLW.max() < 106
    mirror = np.arange(106)
    for a, b in LAPA_MIRROR_PAIRS:
        mirror[a], mirror[b] = b, a
    # Mirroring in LaPa then subsampling = subsampling then mirroring in WFLW.
    np.testing.assert_array_equal(mirror[lapa.LAPA_TO_WFLW], lapa.LAPA_TO_WFLW[face_landmarks.FLIP_PERMUTATION])


def test_read_landmarks(root):
    points = lapa.read_landmarks(f"{root}/val/landmarks/v.txt")
    assert points.shape == (106, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points, fixture_arrays(3)[1], atol=1e-3)


def test_val_example_is_the_plain_crop_with_its_labels(root):
    val = lapa.LaPa(root, "val", size=SIZE)
    assert len(val) == 1
    example = val[0]
    assert example["image"].shape == (SIZE, SIZE, 3) and example["image"].dtype == np.float32
    decoded = np.asarray(Image.open(f"{root}/val/images/v.jpg").convert("RGB"))
    np.testing.assert_array_equal(np.round(example["image"] * 255), decoded[16:64, 8:56])
    expected = (face_template(0.3, 0.3) * SIZE) / SIZE
    np.testing.assert_allclose(example["landmarks"], expected, atol=1e-4)
    assert example["landmarks"].min() == 0.0 and example["landmarks"].max() == 1.0
    # Left eye: 36 px at 48 x 48 = 400 at 160 x 160, EAR 0.3 -> visible and open; right eye occluded.
    np.testing.assert_array_equal(example["eyes"], [1, 1, 0, 0])
    assert example["mouth"] == 0 and example["mouth"].dtype == np.int32 and example["mouth"].shape == ()


def test_train_examples_shapes_ranges_and_determinism(root):
    train = lapa.LaPa(root, "train", size=SIZE, copies=4, seed=3)
    assert len(train) == 12
    for i in range(len(train)):
        example = train[i]
        assert example["image"].dtype == np.float32 and example["image"].shape == (SIZE, SIZE, 3)
        assert 0.0 <= example["image"].min() and example["image"].max() <= 1.0
        assert example["landmarks"].dtype == np.float32 and example["landmarks"].shape == (98, 2)
        assert -0.25 < example["landmarks"].min() and example["landmarks"].max() < 1.25
        assert example["eyes"].dtype == np.float32 and example["eyes"].shape == (4,)
        assert example["mouth"].dtype == np.int32 and example["mouth"] == 0
        assert example["head_pose"].dtype == np.float32 and example["head_pose"].shape == (3,)
        assert np.isfinite(example["head_pose"]).all() and np.abs(example["head_pose"]).max() <= np.pi
        assert example["distraction"] == 0 and example["distraction"].dtype == np.int32
        assert example["confidence"] == 1.0 and example["confidence"].dtype == np.float32
    again = lapa.LaPa(root, "train", size=SIZE, copies=4, seed=3)
    for i in (0, 5):
        first, second = train[i], again[i]
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(train[0]["landmarks"], train[1]["landmarks"])            # copies differ
    other_seed = lapa.LaPa(root, "train", size=SIZE, copies=4, seed=4)
    assert not np.array_equal(train[0]["landmarks"], other_seed[0]["landmarks"])


def test_eye_labels_follow_the_eye_through_flips(root):
    """The white (labelled, visible) eye is the image-left one unless the copy was mirrored; the eye labels
    must follow it."""
    train = lapa.LaPa(root, "train", size=SIZE, copies=10)
    seen = set()
    for i in range(10):
        example = train[i]
        brightness = []
        for eye in (face_landmarks.LEFT_EYE, face_landmarks.RIGHT_EYE):
            x, y = (example["landmarks"][list(eye)].mean(0) * SIZE).astype(int)
            brightness.append(example["image"][y - 1:y + 2, x - 1:x + 2].mean())
        visible_left = brightness[0] > brightness[1]
        seen.add(visible_left)
        np.testing.assert_array_equal(example["eyes"], [1, 1, 0, 0] if visible_left else [0, 0, 1, 1])
    assert seen == {True, False}                                          # both mirrored and plain copies


def test_explicit_augment_and_copies(root):
    plain = lapa.LaPa(root, "train", size=SIZE, copies=2, augment=face_roi.EVAL)
    np.testing.assert_array_equal(plain[0]["landmarks"], plain[1]["landmarks"])
    assert len(lapa.LaPa(root, "val", size=SIZE, copies=10)) == 1      # copies only multiply the train split


def test_missing_folders(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="LaPa root folder not found: .*nowhere"):
        lapa.LaPa(str(tmp_path / "nowhere"), "train")
    with pytest.raises(FileNotFoundError, match="LaPa 'test' images folder not found: .*test/images"):
        lapa.LaPa(root, "test")
    with pytest.raises(ValueError, match="unknown LaPa split 'training'"):
        lapa.LaPa(root, "training")
    os.remove(f"{root}/val/images/v.jpg")
    with pytest.raises(ValueError, match="no \\*.jpg images in .*val/images"):
        lapa.LaPa(root, "val")


def test_image_without_landmarks_or_labels(root):
    os.remove(f"{root}/train/landmarks/b.txt")
    with pytest.raises(ValueError, match="missing landmarks file for .*train/images/b.jpg: expected .*landmarks/b.txt"):
        lapa.LaPa(root, "train")
    os.remove(f"{root}/val/labels/v.png")
    with pytest.raises(ValueError, match="missing labels file for .*val/images/v.jpg: expected .*labels/v.png"):
        lapa.LaPa(root, "val")


@pytest.mark.parametrize("content, message", [
    ("105\n" + "1 2\n" * 105, "v.txt: expected a first line 106 then 106 lines 'x y', got first line '105'"),
    ("106\n" + "1 2\n" * 100, "v.txt: expected a first line 106 .* and 100 more lines"),
    ("", "v.txt: expected a first line 106 .* got first line 'nothing'"),
    ("106\n" + "1 2\n" * 3 + "1.5 abc\n" + "1 2\n" * 102, "v.txt line 5: expected 'x y', got '1.5 abc'"),
    ("106\n" + "1 2 3\n" + "1 2\n" * 105, "v.txt line 2: expected 'x y', got '1 2 3' \\(3 fields\\)"),
    ("106\n" + "nan 2\n" + "1 2\n" * 105, "v.txt: landmarks must be finite"),
])
def test_bad_landmark_file(root, content, message):
    with open(f"{root}/val/landmarks/v.txt", "w") as f:
        f.write(content)
    val = lapa.LaPa(root, "val", size=SIZE)                 # listing is fine; the file is read per example
    with pytest.raises(ValueError, match=message):
        val[0]


def test_label_map_of_another_size(root):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(f"{root}/val/labels/v.png")
    with pytest.raises(ValueError, match="size mismatch: .*v.jpg 80x64, .*v.png 64x64"):
        lapa.LaPa(root, "val", size=SIZE)[0]


def test_corrupt_image(root):
    with open(f"{root}/train/images/b.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    train = lapa.LaPa(root, "train", size=SIZE, copies=2)
    train[0]                                                 # image a is fine
    with pytest.raises(ValueError, match="cannot read image .*train/images/b.jpg"):
        train[2]


def test_index_out_of_range(root):
    with pytest.raises(IndexError, match="index 3 out of range"):
        lapa.LaPa(root, "train", size=SIZE, copies=1)[3]
