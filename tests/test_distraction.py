"""Distraction images (thesis Sec. 2.3.2): keypoint files, teacher pseudo labels with the confidence of Eq. 2.4,
the pseudo-labelled example source and the `jaxvision pseudo-label` command."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from jaxvision.data import distraction, face_landmarks, face_roi
from jaxvision.data.synthetic_faces import SyntheticFaces

FACE, H, W, SIZE = 96, 128, 144, 64
OFFSETS = [(10, 20), (40, 5), (0, 30), (25, 12)]        # where each face sits in its H x W image
FOLDERS = ["phone", "phone", "smoking", "smoking"]


@pytest.fixture(scope="module")
def faces():
    """[(folder, name, image uint8 [H, W, 3], true landmarks [98, 2] image px, eyes, mouth, head pose)]."""
    source = SyntheticFaces("val", len(OFFSETS), FACE, seed=3)
    out = []
    for k, (offset, folder) in enumerate(zip(OFFSETS, FOLDERS)):
        example = source[k]
        image = np.zeros((H, W, 3), np.uint8)
        image[offset[1]:offset[1] + FACE, offset[0]:offset[0] + FACE] = np.round(example["image"] * 255)
        out.append((folder, f"img{k}", image, example["landmarks"] * FACE + np.float32(offset),
                    example["eyes"], int(example["mouth"]), example["head_pose"]))
    return out


def write_root(root, faces) -> str:
    """The fixture images as PNGs and their true keypoints in keypoints.json, in the documented layout."""
    keypoints = {}
    for folder, name, image, landmarks, *_ in faces:
        os.makedirs(root / folder, exist_ok=True)
        Image.fromarray(image).save(root / folder / f"{name}.png")
        keypoints.setdefault(folder, {})[name] = landmarks[list(distraction.KEYPOINT_INDICES)].tolist()
    for folder, points in keypoints.items():
        (root / folder / distraction.KEYPOINTS_FILE).write_text(json.dumps(points))
    return str(root)


@pytest.fixture
def root(tmp_path, faces):
    return write_root(tmp_path / "images", faces)


class Oracle:
    """A teacher that knows the truth: each crop it gets is matched to the crops `pseudo_label` makes (first pass
    from the keypoints, second from the first pass's landmarks); it returns the true landmarks moved by `shift`
    x S image pixels in x, mapped into the crop, and the true eyes / mouth / head pose."""

    def __init__(self, root, faces, shift=0.0):
        crops, self.entries = [], []
        for annotation, (_, _, image, landmarks, eyes, mouth, pose) in zip(distraction.read_annotations(root), faces):
            moved = landmarks + np.float32([shift * distraction.keypoint_box_side(annotation.keypoints), 0])
            for crop, matrix in (distraction.keypoint_crop(image, annotation.keypoints, SIZE),
                                 distraction.landmark_crop(image, moved, SIZE)):
                crops.append(crop.astype(np.float32))
                self.entries.append((matrix, moved, eyes, mouth, pose))
        self.crops = np.stack(crops)
        self.batches = []

    def __call__(self, pixels):
        self.batches.append(len(pixels))
        out = {"landmarks": np.zeros((len(pixels), 98, 2), np.float32), "eyes": np.zeros((len(pixels), 4)),
               "mouth": np.zeros((len(pixels), 3)), "head_pose": np.zeros((len(pixels), 3))}
        for i, p in enumerate(pixels):
            if not p.any():
                continue                                    # batch padding
            errors = np.abs(self.crops - p).mean((1, 2, 3))
            assert errors.min() < 0.5, errors.min()
            matrix, moved, eyes, mouth, pose = self.entries[int(errors.argmin())]
            out["landmarks"][i] = (moved @ matrix[:2, :2].T + matrix[:2, 2]) / SIZE
            out["eyes"][i] = np.where(eyes > 0, 0.9, 0.1)
            out["mouth"][i, mouth] = 1.0
            out["head_pose"][i] = pose
        return out


def label(root, faces, tmp_path, shift=0.0, alpha=distraction.DEFAULT_ALPHA, batch_size=3):
    out = str(tmp_path / "labels.jsonl")
    records = distraction.pseudo_label(root, Oracle(root, faces, shift), out, alpha, batch_size, SIZE)
    return records, out


def test_alpha_maps_good_and_bad_fits_as_documented():
    np.testing.assert_allclose(distraction.confidence([0.02, 0.05, 0.2]), [0.8596, 0.6993, 0.4566], atol=1e-4)
    assert distraction.confidence(0.0) == 1.0 and distraction.confidence(0.005) == 1.0
    assert distraction.confidence(10.0) == 0.0


def test_oracle_teacher_gives_d_zero_and_full_confidence_with_its_labels(root, faces, tmp_path):
    records, out = label(root, faces, tmp_path)
    with open(out) as f:
        lines = [json.loads(line) for line in f]
    assert lines == records and len(records) == len(faces)
    for record, (folder, name, _, landmarks, eyes, mouth, pose) in zip(records, faces):
        assert list(record) == list(distraction.RECORD_FIELDS)
        assert record["path"] == f"{folder}/{name}.png"
        assert record["distraction"] == face_landmarks.DISTRACTION_CLASSES.index(folder)
        assert record["d"] < 1e-4 and record["confidence"] == 1.0
        np.testing.assert_allclose(record["landmarks"], landmarks, atol=2e-3)
        assert record["eyes"] == eyes.astype(int).tolist() and record["mouth"] == mouth
        np.testing.assert_allclose(record["head_pose"], pose, atol=1e-6)
    assert [r["distraction"] for r in records] == [1, 1, 2, 2]


@pytest.mark.parametrize("alpha", [distraction.DEFAULT_ALPHA, 0.1])
def test_shifted_teacher_gives_d_of_the_shift_and_eq_2_4(root, faces, tmp_path, alpha):
    records, _ = label(root, faces, tmp_path, shift=0.05, alpha=alpha)
    for record, (_, _, _, landmarks, *_) in zip(records, faces):
        assert record["d"] == pytest.approx(0.05, abs=1e-6)
        assert record["confidence"] == pytest.approx(alpha * (1 - np.log(0.05)), abs=1e-5)
        np.testing.assert_allclose(np.subtract(record["landmarks"], landmarks)[:, 1], 0, atol=2e-3)


def test_teacher_is_called_in_padded_batches_and_exportable_like_teachers_work(root, faces, tmp_path):
    oracle = Oracle(root, faces)

    def as_tuple(pixels):
        out = oracle(pixels)
        return tuple(out[name] for name in distraction.TEACHER_OUTPUTS[:4])

    class Exportable:            # the fields of exporter.Exportable that pseudo_label reads; tuple outputs
        fn = staticmethod(as_tuple)
        height = width = SIZE
        output_names = distraction.TEACHER_OUTPUTS[:4]

    records = distraction.pseudo_label(root, Exportable(), str(tmp_path / "l.jsonl"), batch_size=3, size=999)
    assert oracle.batches == [3, 3, 3, 3] and [r["confidence"] for r in records] == [1.0] * 4
    Exportable.output_names = ("semseg_logits", "semseg_labels", "depth")
    with pytest.raises(ValueError, match="task 'dms'"):
        distraction.pseudo_label(root, Exportable(), str(tmp_path / "l.jsonl"))
    with pytest.raises(ValueError, match="alpha"):
        distraction.pseudo_label(root, oracle, str(tmp_path / "l.jsonl"), alpha=1.5)


def test_failures_leave_nothing_half_written(root, faces, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError):
        label(root, faces, blocked)                           # out path under a file: cannot be created
    out = tmp_path / "labels.jsonl"
    out.write_text("old\n")
    oracle = Oracle(root, faces)

    def failing(pixels):
        if len(oracle.batches) == 2:
            raise RuntimeError("teacher failed")
        return oracle(pixels)

    with pytest.raises(RuntimeError):
        distraction.pseudo_label(root, failing, str(out), batch_size=2, size=SIZE)
    assert out.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["file", "images", "labels.jsonl"]


def test_bad_folders_and_keypoints_name_the_file(root, tmp_path):
    phone = os.path.join(root, "phone")
    keypoints_path = os.path.join(phone, distraction.KEYPOINTS_FILE)
    points = json.load(open(keypoints_path))
    with pytest.raises(FileNotFoundError, match="images_missing"):
        distraction.read_annotations(str(tmp_path / "images_missing"))

    json.dump({"img0": points["img0"]}, open(keypoints_path, "w"))
    with pytest.raises(ValueError, match=r"phone/img1\.png has no keypoints in .*keypoints\.json"):
        distraction.read_annotations(root)
    json.dump({**points, "img1": points["img1"][:4]}, open(keypoints_path, "w"))
    with pytest.raises(ValueError, match=r"phone/keypoints\.json: 'img1': expected 5 \[x, y\] keypoints"):
        distraction.read_annotations(root)
    json.dump({**points, "gone": points["img1"]}, open(keypoints_path, "w"))
    with pytest.raises(ValueError, match=r"keypoints\.json: names without exactly one image .*'gone'"):
        distraction.read_annotations(root)
    json.dump({**points, "img1": [[x + 1000, y] for x, y in points["img1"]]}, open(keypoints_path, "w"))
    annotation = distraction.read_annotations(root)[1]
    with pytest.raises(ValueError, match=r"img1\.png: keypoints .* fall outside the 144x128 image"):
        distraction.read_image(root, annotation)
    json.dump(points, open(keypoints_path, "w"))

    open(os.path.join(phone, "img1.png"), "wb").write(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*phone/img1\.png"):
        distraction.read_image(root, distraction.read_annotations(root)[1])
    os.remove(keypoints_path)
    with pytest.raises(FileNotFoundError, match=r"keypoints file not found: .*phone/keypoints\.json"):
        distraction.read_annotations(root)
    json.dump(points, open(keypoints_path, "w"))
    os.rename(os.path.join(root, "smoking"), os.path.join(root, "other"))
    with pytest.raises(FileNotFoundError, match=r"distraction class 'smoking' folder not found"):
        distraction.read_annotations(root)


@pytest.fixture
def labelled(root, faces, tmp_path):
    records, out = label(root, faces, tmp_path, shift=0.05)
    return root, out, records


def test_pseudo_labelled_examples_carry_the_labels(labelled):
    root, out, records = labelled
    source = distraction.PseudoLabelled(out, root, size=SIZE, copies=8, seed=1)
    assert len(source) == 4 * 8
    example = source[9]                                              # image 1, copy 1
    shapes = {k: (np.shape(v), np.asarray(v).dtype) for k, v in example.items()}
    assert shapes == {"image": ((SIZE, SIZE, 3), np.float32), "landmarks": ((98, 2), np.float32),
                      "eyes": ((4,), np.float32), "mouth": ((), np.int32), "head_pose": ((3,), np.float32),
                      "distraction": ((), np.int32), "confidence": ((), np.float32)}
    assert 0 <= example["image"].min() and example["image"].max() <= 1
    assert [int(source[8 * i]["distraction"]) for i in range(4)] == [1, 1, 2, 2]
    assert float(example["confidence"]) == pytest.approx(records[1]["confidence"], rel=1e-6)
    again = distraction.PseudoLabelled(out, root, size=SIZE, copies=8, seed=1)[9]
    assert all(np.array_equal(example[k], again[k]) for k in example)
    other = distraction.PseudoLabelled(out, root, size=SIZE, copies=8, seed=2)[9]
    assert not np.array_equal(example["image"], other["image"])


def test_rotation_and_flip_move_pose_eyes_and_landmarks_like_crop_face(labelled):
    root, out, records = labelled
    source = distraction.PseudoLabelled(out, root, size=SIZE, copies=8, seed=0)
    flips = set()
    for index in range(len(source)):
        image_index, copy = divmod(index, 8)
        record, example = records[image_index], source[index]
        image = np.asarray(Image.open(os.path.join(root, record["path"])).convert("RGB"))
        rng = np.random.default_rng([0, image_index, copy])
        _, points, _, applied = face_roi.crop_face(image, np.float32(record["landmarks"]), None, SIZE, rng,
                                                   face_roi.TRAIN)
        yaw, pitch, roll = record["head_pose"]
        roll += applied["angle"]
        eyes = np.float32(record["eyes"])
        if applied["flipped"]:
            yaw, roll, eyes = -yaw, -roll, eyes[[2, 3, 0, 1]]
        flips.add(applied["flipped"])
        np.testing.assert_allclose(example["head_pose"], [yaw, pitch, roll], atol=1e-6)
        np.testing.assert_array_equal(example["eyes"], eyes)
        np.testing.assert_allclose(example["landmarks"], points / SIZE, atol=1e-6)
        assert example["mouth"] == record["mouth"]
        assert (example["landmarks"] > -0.3).all() and (example["landmarks"] < 1.3).all()
    assert flips == {True, False}
    assert any(r["eyes"][0] != r["eyes"][2] or r["eyes"][1] != r["eyes"][3] for r in records)  # a swap shows


def test_eval_split_is_one_unaugmented_crop_inside_the_square(labelled):
    root, out, records = labelled
    source = distraction.PseudoLabelled(out, root, size=SIZE, split="val")
    assert len(source) == 4
    example = source[2]
    assert example["landmarks"].min() >= 0 and example["landmarks"].max() <= 1 + 1e-6
    assert np.isclose(example["landmarks"], 0, atol=1e-4).any() and np.isclose(example["landmarks"], 1).any()
    np.testing.assert_allclose(example["head_pose"], records[2]["head_pose"], atol=1e-6)


def test_bad_label_files_are_named(labelled, tmp_path):
    root, out, _ = labelled
    lines = open(out).read().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + json.dumps({**json.loads(lines[1]), "landmarks": [[0, 0]] * 5}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: .*landmarks of shape \(5, 2\)"):
        distraction.PseudoLabelled(str(bad), root)
    bad.write_text(json.dumps({"path": "phone/img0.png"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 1: .*missing fields \['distraction'"):
        distraction.PseudoLabelled(str(bad), root)
    with pytest.raises(FileNotFoundError, match=r"image of .*labels\.jsonl not found: .*phone/img0\.png"):
        distraction.PseudoLabelled(out, str(tmp_path / "elsewhere"))


def test_concatenated_maps_indices_into_each_source():
    joined = distraction.Concatenated([["a0", "a1"], [], ["b0"], ["c0", "c1", "c2"]])
    assert len(joined) == 6
    assert [joined[i] for i in range(6)] == ["a0", "a1", "b0", "c0", "c1", "c2"]
    with pytest.raises(IndexError):
        joined[6]
    assert len(distraction.Concatenated([])) == 0


def test_cli_errors_are_one_line(root, tmp_path):
    out = str(tmp_path / "labels.jsonl")
    proc = run_cli(["pseudo-label", "--teacher", str(tmp_path / "no_run"), "--images", root, "--out", out],
                   check=False, timeout=300)
    assert proc.returncode == 1 and not os.path.exists(out)
    assert proc.stderr.strip().splitlines() == [f"jaxvision: error: teacher workdir not found: {tmp_path}/no_run"]
    proc = run_cli(["pseudo-label", "--teacher", str(tmp_path), "--images", str(tmp_path / "none"), "--out", out],
                   check=False, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"jaxvision: error: distraction images root folder not found: {tmp_path}/none"]


DMS_TINY = ["--config", os.path.join(os.path.dirname(__file__), "..", "configs", "dms", "tiny.py"),
            "--config.data.height=64", "--config.data.width=64", "--config.data.num_train=8",
            "--config.data.num_val=4", "--config.data.num_threads=1", "--config.train.batch_size=4",
            "--config.train.num_steps=1", "--config.train.checkpoint_every=1", "--config.train.eval_every=1000",
            "--config.eval.batch_size=4", "--config.eval.num_grid_images=1"]


@pytest.mark.slow
def test_cli_pseudo_labels_with_a_trained_dms_run(root, tmp_path):
    """End to end: a 1-step tiny DMS run as the teacher (about a minute on a CPU)."""
    teacher, out = str(tmp_path / "teacher"), str(tmp_path / "labels.jsonl")
    run_cli(["train", "--workdir", teacher, *DMS_TINY])
    proc = run_cli(["pseudo-label", "--teacher", teacher, "--step", "1", "--images", root, "--out", out,
                    "--alpha", "0.2"])
    assert f"wrote 4 pseudo labels to {out}" in proc.stdout
    records = [json.loads(line) for line in open(out)]
    assert [r["path"] for r in records] == ["phone/img0.png", "phone/img1.png", "smoking/img2.png",
                                            "smoking/img3.png"]
    for r in records:
        assert list(r) == list(distraction.RECORD_FIELDS) and np.shape(r["landmarks"]) == (98, 2)
        assert set(r["eyes"]) <= {0, 1} and r["mouth"] in (0, 1, 2) and len(r["head_pose"]) == 3
        assert r["confidence"] == pytest.approx(float(distraction.confidence(r["d"], 0.2)))


def test_training_stream_adds_the_pseudo_labelled_images_to_a_face_source(labelled):
    """`data.pseudo_labels` appends the distraction images (their confidences, their classes) to the train split
    only; the val split stays the face source's."""
    import ml_collections
    from jaxvision.config import load_config_file
    from jaxvision.data import pipeline
    root, out, records = labelled
    config = load_config_file("configs/dms/small.py")
    data = config.data
    data.update(height=SIZE, width=SIZE, num_train=6, num_val=2, copies=2, distraction_root=root,
                pseudo_labels=out, augment=ml_collections.ConfigDict(dict(photometric=False)), num_threads=1)
    train = pipeline.get_source(data, "train")
    assert len(train) == 6 + 2 * len(records) and len(pipeline.get_source(data, "val")) == 2
    batch = next(pipeline.make_train_iterator(data, len(train), seed=0, process_index=0, process_count=1))
    confidences = sorted(np.round(batch["confidence"], 6).tolist())
    expected = sorted([1.0] * 6 + [round(r["confidence"], 6) for r in records for _ in range(2)])
    np.testing.assert_allclose(confidences, expected, atol=1e-6)
    assert sorted(batch["distraction"][batch["confidence"] < 1].tolist()) == sorted(
        r["distraction"] for r in records for _ in range(2))
    data.distraction_root = ""
    with pytest.raises(ValueError, match="data.distraction_root"):
        pipeline.get_source(data, "train")
