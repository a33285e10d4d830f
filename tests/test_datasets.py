"""Dataset readers on tiny fixtures written in the real on-disk formats: Cityscapes / miniscapes, NYU-Depth-v2."""

import json
import os
import pickle
import shutil

import h5py
import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxvision.data import cityscapes, nyu, pipeline

H, W = 8, 16
BASELINE, FX = 0.2, 2000.0            # baseline * fx = 400 m px: disparity d px -> 400 / d metres


def data_config(name, root, height=H, width=W, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        name=name, root=str(root), height=height, width=width, num_train=1, num_val=1, num_classes=19,
        augment=ml_collections.ConfigDict(dict(flip=True, scale_range=(1.0, 1.0), color_jitter=0.0)),
        num_threads=1, prefetch=1))
    config.update(overrides)
    return config


# ---------------------------------------------------------------------------------------------- Cityscapes


def frame_arrays(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, label ids, disparity png values) of fixture frame k."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.arange(W) * 10 + k
    image[..., 1] = np.arange(H)[:, None] * 20
    image[..., 2] = 200 - k
    label_ids = np.full((H, W), 7, np.uint8)           # road
    label_ids[0] = 23                                  # sky
    label_ids[1, :4] = 26                              # car
    label_ids[1, 4:8] = 0                              # unlabeled
    label_ids[1, 8:12] = 255                           # license plate (-1) if it were stored as uint8
    label_ids[1, 12:] = 9                              # parking (no train id)
    disparity = np.full((H, W), 257 + 256 * k, np.uint16)   # d = 1 + k px
    disparity[0] = 0                                   # no measurement (sky)
    disparity[2, 0] = 1                                # zero disparity: infinitely far
    disparity[3, 0] = 2561                             # d = 10 px -> 40 m
    return image, label_ids, disparity


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def write_frame(root, split, city, name, k):
    stem = f"{city}/{city}_{name}"
    image, label_ids, disparity = frame_arrays(k)
    write_png(f"{root}/leftImg8bit/{split}/{stem}_leftImg8bit.png", image)
    write_png(f"{root}/gtFine/{split}/{stem}_gtFine_labelIds.png", label_ids)
    write_png(f"{root}/disparity/{split}/{stem}_disparity.png", disparity)
    os.makedirs(f"{root}/camera/{split}/{city}", exist_ok=True)
    with open(f"{root}/camera/{split}/{stem}_camera.json", "w") as f:
        json.dump({"extrinsic": {"baseline": BASELINE, "pitch": 0.04, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": 0.0,
                                 "z": 1.2},
                   "intrinsic": {"fx": FX, "fy": FX, "u0": W / 2, "v0": H / 2}}, f)


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    """train: aachen 000000_000019 (k=0), 000001_000019 (k=1), bremen 000000_000019 (k=2); val: one frame (k=3)."""
    root = tmp_path_factory.mktemp("cityscapes")
    write_frame(root, "train", "bremen", "000000_000019", 2)
    write_frame(root, "train", "aachen", "000001_000019", 1)
    write_frame(root, "train", "aachen", "000000_000019", 0)
    write_frame(root, "val", "lindau", "000000_000019", 3)
    return root


@pytest.fixture
def city_copy(city_root, tmp_path):
    """A fresh copy of the fixture that a test may break."""
    return shutil.copytree(city_root, tmp_path / "cs")


def test_label_ids_map_to_the_official_train_ids():
    ids = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], np.uint8)
    np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(ids), np.arange(19))
    ignored = np.array([0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 100, 255], np.uint8)
    assert (cityscapes.label_ids_to_train_ids(ignored) == 255).all()
    assert cityscapes.label_ids_to_train_ids(np.uint8(26)) == 13           # car
    assert cityscapes.label_ids_to_train_ids(np.uint8(7)) == 0             # road


def test_disparity_to_metric_depth_hand_computed():
    png = np.array([[0, 1, 257, 513], [2561, 25601, 129, 65535]], np.uint16)
    depth = cityscapes.disparity_to_depth(png, BASELINE, FX)
    # d = (p - 1) / 256: 1, 2, 10, 100, 0.5, 255.9921875 px; depth = 400 / d.
    expected = [[0, 0, 400, 200], [40, 4, 800, 400 / 255.9921875]]
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert depth.dtype == np.float32


def test_cityscapes_example_values(city_root):
    source = cityscapes.Cityscapes(str(city_root), "train", H, W)
    assert len(source) == 3
    assert source.stems == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                            "bremen/bremen_000000_000019"]
    example = source[1]                                                     # k = 1: disparity 513, d = 2 px
    assert example.keys() == {"image", "semseg", "depth"}
    assert example["image"].dtype == np.uint8 and example["image"].shape == (H, W, 3)
    assert example["semseg"].dtype == np.uint8 and example["semseg"].shape == (H, W)
    assert example["depth"].dtype == np.float32 and example["depth"].shape == (H, W)
    np.testing.assert_array_equal(example["image"], frame_arrays(1)[0])
    semseg = example["semseg"]
    assert (semseg[0] == 10).all()                                          # sky 23 -> 10
    assert (semseg[1, :4] == 13).all() and (semseg[1, 4:] == 255).all()     # car -> 13; 0, 255, 9 -> ignore
    assert (semseg[2:] == 0).all()                                          # road 7 -> 0
    depth = example["depth"]
    assert (depth[0] == 0).all() and depth[2, 0] == 0                       # p = 0 and p = 1 invalid
    assert depth[3, 0] == pytest.approx(40.0)
    np.testing.assert_allclose(depth[4:], 200.0)
    assert cityscapes.Cityscapes(str(city_root), "val", H, W)[0]["depth"][5, 5] == pytest.approx(400 / 4)


def test_cityscapes_resizes_labels_and_depth_with_nearest(city_root):
    full = cityscapes.Cityscapes(str(city_root), "train", H, W)[0]
    half = cityscapes.Cityscapes(str(city_root), "train", H // 2, W // 2)[0]
    assert half["image"].shape == (H // 2, W // 2, 3) and half["image"].dtype == np.uint8
    np.testing.assert_array_equal(half["semseg"], full["semseg"][1::2, 1::2])
    np.testing.assert_array_equal(half["depth"], full["depth"][1::2, 1::2])     # metres unchanged
    # Bilinear, antialiased (a tent over source columns 2i - 0.5 .. 2i + 2.5) of channel 0 = 10 x + k (k = 0):
    # 10 (2i + 0.5) away from the borders.
    np.testing.assert_allclose(half["image"][0, 1:-1, 0], np.arange(1, W // 2 - 1) * 20 + 5, atol=1)


def test_missing_folders_and_files_are_named(city_root, city_copy):
    with pytest.raises(FileNotFoundError, match="dataset root folder not found: /no/such/dir"):
        cityscapes.Cityscapes("/no/such/dir", "train", H, W)
    missing_split = f"{city_root}/leftImg8bit/test"
    with pytest.raises(FileNotFoundError, match=f"'test' leftImg8bit folder not found: {missing_split}"):
        cityscapes.Cityscapes(str(city_root), "test", H, W)
    shutil.rmtree(city_copy / "camera" / "val")
    with pytest.raises(FileNotFoundError, match=f"{city_copy}/camera/val"):
        cityscapes.Cityscapes(str(city_copy), "val", H, W)
    missing = city_copy / "disparity/train/aachen/aachen_000001_000019_disparity.png"
    os.remove(missing)
    image = "aachen_000001_000019_leftImg8bit.png"
    with pytest.raises(ValueError, match=f"missing disparity file for .*/{image}: {missing}"):
        cityscapes.Cityscapes(str(city_copy), "train", H, W)


def test_unpaired_label_and_empty_split_are_named(city_copy):
    image = city_copy / "leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png"
    os.remove(image)
    with pytest.raises(ValueError, match=f"label without an image: .*bremen_000000_000019_gtFine_labelIds.png "
                                         f"\\(expected {image}\\)"):
        cityscapes.Cityscapes(str(city_copy), "train", H, W)
    os.remove(city_copy / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png")
    with pytest.raises(ValueError, match=f"no \\*_leftImg8bit.png files in {city_copy}/leftImg8bit/val"):
        cityscapes.Cityscapes(str(city_copy), "val", H, W)


def test_unreadable_or_mismatched_files_are_named(city_copy):
    source = cityscapes.Cityscapes(str(city_copy), "train", H, W)
    image = city_copy / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])                                 # truncated png
    with pytest.raises(ValueError, match=f"cannot read image {image}"):
        source[0]
    label = city_copy / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    label.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"cannot read image {label}"):
        source[1]
    write_png(label, np.zeros((H, W, 3), np.uint8))                          # RGB instead of label ids
    with pytest.raises(ValueError, match=f"{label}: expected a single-channel image"):
        source[1]
    disparity = city_copy / "disparity/train/bremen/bremen_000000_000019_disparity.png"
    write_png(disparity, np.zeros((H, W + 1), np.uint16))
    with pytest.raises(ValueError, match=f"size mismatch: .*leftImg8bit.png 8x16, .*gtFine_labelIds.png 8x16, "
                                         f"{disparity} 8x17"):
        source[2]
    camera = city_copy / "camera/val/lindau/lindau_000000_000019_camera.json"
    camera.write_text(json.dumps({"extrinsic": {}, "intrinsic": {"fx": FX}}))
    with pytest.raises(ValueError, match=f"cannot read camera {camera}: expected extrinsic.baseline"):
        cityscapes.Cityscapes(str(city_copy), "val", H, W)[0]
    with pytest.raises(IndexError, match="out of range"):
        source[3]


def test_cityscapes_and_miniscapes_feed_the_pipelines(city_root):
    config = data_config("cityscapes", city_root)
    batch = next(pipeline.make_train_iterator(config, 2, seed=0, process_index=0, process_count=1))
    assert batch["image"].shape == (2, H, W, 3) and batch["image"].dtype == np.float32
    assert batch["semseg"].shape == (2, H, W) and batch["semseg"].dtype == np.int32
    assert batch["depth"].shape == (2, H, W) and batch["depth"].dtype == np.float32
    assert set(np.unique(batch["semseg"])) == {0, 10, 13, 255}
    assert set(np.unique(batch["depth"])) <= {0.0, 40.0, 400.0, 200.0, np.float32(400 / 3)}
    assert pipeline.num_eval_examples(data_config("miniscapes", city_root)) == 1
    (eval_batch,) = list(pipeline.make_eval_iterator(data_config("miniscapes", city_root), 2, 0, 1))
    np.testing.assert_array_equal(eval_batch["mask"], [1, 0])
    assert eval_batch["depth"][0, 5, 5] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="set data.root"):
        pipeline.get_source(data_config("cityscapes", ""), "train")


# ---------------------------------------------------------------------------------------------- NYU-Depth-v2

N, NH, NW = 5, 6, 8                   # 5 images of 6 rows x 8 columns
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def stored_images() -> np.ndarray:
    """images as MATLAB v7.3 stores them, [N, 3, W, H]: value 40 n + 10 c + x + 5 y at (n, c, x, y)."""
    return np.fromfunction(lambda n, c, x, y: 40 * n + 10 * c + x + 5 * y, (N, 3, NW, NH)).astype(np.uint8)


def stored_depths() -> np.ndarray:
    """depths [N, W, H]: 1 + n + 0.5 y + 0.125 x metres; image 2 has a 0 at (x=4, y=1) and a NaN at (x=0, y=0)."""
    depths = np.fromfunction(lambda n, x, y: 1 + n + 0.5 * y + 0.125 * x, (N, NW, NH)).astype(np.float32)
    depths[1, 4, 1], depths[1, 0, 0] = 0, np.nan
    return depths


def stored_labels() -> np.ndarray:
    """labels [N, W, H] uint16: x + 10 y, with 894 at (x=7, y=5) and 0 (unlabeled) at (x=0, y=0)."""
    labels = np.fromfunction(lambda n, x, y: x + 10 * y, (N, NW, NH)).astype(np.uint16)
    labels[:, 7, 5] = 894
    return labels


def write_labeled_mat(path, **arrays):
    arrays = {"images": stored_images(), "depths": stored_depths(), "labels": stored_labels(), **arrays}
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in arrays.items():
            if array is not None:
                f.create_dataset(name, data=array)
    with open(path, "r+b") as f:                                              # MATLAB's 128-byte text header
        f.write(MATLAB_HEADER.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def write_splits(path, train=(3, 1, 5), test=(2, 4)):
    scipy.io.savemat(path, {"trainNdxs": np.array(train, np.float64)[:, None],
                            "testNdxs": np.array(test, np.float64)[:, None]})


@pytest.fixture
def nyu_root(tmp_path):
    write_labeled_mat(tmp_path / nyu.MAT_FILE)
    write_splits(tmp_path / nyu.SPLITS_FILE)
    return tmp_path


def test_nyu_orientation_split_and_depth(nyu_root):
    train = nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    val = nyu.NYUDepthV2(str(nyu_root), "val", NH, NW)
    assert (len(train), len(val)) == (3, 2)
    example = train[1]                                                      # trainNdxs[1] = 1: image n = 0
    assert example.keys() == {"image", "semseg", "depth"}
    image = example["image"]
    assert image.shape == (NH, NW, 3) and image.dtype == np.uint8           # rows = H = 6, columns = W = 8
    assert image[0, 0].tolist() == [0, 10, 20]
    assert image[0, 3].tolist() == [3, 13, 23]                              # column x = 3
    assert image[2, 0].tolist() == [10, 20, 30]                             # row y = 2
    assert image[5, 7].tolist() == [32, 42, 52]
    assert train[0]["image"][1, 2, 0] == 40 * 2 + 2 + 5                     # trainNdxs[0] = 3: image n = 2
    assert val[1]["image"][0, 0, 0] == 40 * 3                               # testNdxs[1] = 4
    depth = val[0]["depth"]                                                 # testNdxs[0] = 2: image n = 1
    assert depth.dtype == np.float32 and depth.shape == (NH, NW)
    assert depth[3, 2] == 1 + 1 + 0.5 * 3 + 0.125 * 2
    assert depth[1, 4] == 0 and depth[0, 0] == 0                            # stored 0 and NaN: invalid
    assert (val[0]["semseg"] == 255).all()                                  # no label map: depth only


def test_nyu_label_map_and_resize(nyu_root):
    table = np.full(895, 255, np.int64)
    table[1:] = np.arange(1, 895) % 40
    np.save(nyu_root / "map40.npy", table)
    source = nyu.NYUDepthV2(str(nyu_root), "train", NH, NW, str(nyu_root / "map40.npy"))
    semseg = source[0]["semseg"]
    assert semseg.dtype == np.uint8
    assert semseg[0, 0] == 255 and semseg[0, 3] == 3 and semseg[2, 1] == 21 and semseg[4, 1] == 41 % 40
    assert semseg[5, 7] == 894 % 40
    half = nyu.NYUDepthV2(str(nyu_root), "train", NH // 2, NW // 2, str(nyu_root / "map40.npy"))[0]
    np.testing.assert_array_equal(half["semseg"], semseg[1::2, 1::2])
    np.testing.assert_array_equal(half["depth"], source[0]["depth"][1::2, 1::2])
    assert half["image"].shape == (NH // 2, NW // 2, 3)
    restored = pickle.loads(pickle.dumps(source))                           # no open handle to pickle
    np.testing.assert_array_equal(restored[0]["image"], source[0]["image"])


def test_nyu_feeds_the_pipeline(nyu_root):
    config = data_config("nyu_depth_v2", nyu_root, NH, NW, label_map="")
    assert pipeline.num_eval_examples(config) == 2
    batch = next(pipeline.make_train_iterator(config, 3, seed=0, process_index=0, process_count=1))
    assert batch["image"].shape == (3, NH, NW, 3) and (batch["semseg"] == 255).all()
    assert (batch["depth"] >= 1).all()
    (eval_batch,) = list(pipeline.make_eval_iterator(config, 2, 0, 1))       # testNdxs 2, 4
    assert eval_batch["depth"][0, 1, 4] == 0 and eval_batch["depth"][1, 0, 0] == 1 + 3


def test_nyu_errors_name_the_file(nyu_root, tmp_path_factory):
    mat, splits = nyu_root / nyu.MAT_FILE, nyu_root / nyu.SPLITS_FILE
    with pytest.raises(ValueError, match="unknown split 'test'"):
        nyu.NYUDepthV2(str(nyu_root), "test", NH, NW)
    write_splits(splits, train=(1, 6))
    with pytest.raises(ValueError, match=f"NYU splits {splits}: trainNdxs must hold 1-based image indices in \\[1, 5"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1.0]])})
    with pytest.raises(ValueError, match=f"NYU splits {splits} has no 'testNdxs'"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    splits.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot read NYU splits {splits}"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    os.remove(splits)
    with pytest.raises(FileNotFoundError, match=f"NYU-Depth-v2 splits file not found: {splits}"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    write_splits(splits)
    np.save(nyu_root / "bad.npy", np.zeros((2, 895), np.int64))
    with pytest.raises(ValueError, match=f"NYU label map {nyu_root}/bad.npy: expected a 1-D integer array"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW, str(nyu_root / "bad.npy"))
    np.save(nyu_root / "short.npy", np.zeros(40, np.int64))
    with pytest.raises(ValueError, match=f"{mat} image 3: raw label 894 has no entry in the 40-entry label map "
                                         f"{nyu_root}/short.npy"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW, str(nyu_root / "short.npy"))[0]
    write_labeled_mat(mat, depths=None)
    with pytest.raises(ValueError, match=f"{mat} has no 'depths' array"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    write_labeled_mat(mat, labels=stored_labels()[:, :, :4])
    with pytest.raises(ValueError, match=f"{mat}: 'labels' \\(5, 8, 4\\) does not match 'images' \\(5, 3, 8, 6\\)"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    scipy.io.savemat(mat, {"images": np.zeros((2, 2))})                    # MATLAB v5, not v7.3
    with pytest.raises(ValueError, match=f"cannot read {mat} as a MATLAB v7.3 \\(HDF5\\) file"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
    os.remove(mat)
    with pytest.raises(FileNotFoundError, match=f"NYU-Depth-v2 labeled .mat not found: {mat}"):
        nyu.NYUDepthV2(str(nyu_root), "train", NH, NW)
