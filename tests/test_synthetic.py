"""Synthetic driving scenes: determinism, resolution independence, pinhole geometry, labels and boxes."""

import dataclasses

import numpy as np
import pytest

from jaxvision.data import synthetic
from jaxvision.data.synthetic import Camera, SyntheticScenes, render, render_scene, sample_scene

H, W = 64, 128
VALID_IDS = {synthetic.ROAD, synthetic.SIDEWALK, synthetic.BUILDING, synthetic.POLE, synthetic.TRAFFIC_SIGN,
             synthetic.VEGETATION, synthetic.TERRAIN, synthetic.SKY, synthetic.PERSON, synthetic.CAR, synthetic.TRUCK}
GROUND_IDS = (synthetic.ROAD, synthetic.SIDEWALK, synthetic.TERRAIN)


def test_same_seed_and_index_give_identical_scenes():
    a, b = render_scene(3, 7, H, W), render_scene(3, 7, H, W)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["semseg"], render_scene(3, 8, H, W)["semseg"])
    assert not np.array_equal(a["semseg"], render_scene(4, 7, H, W)["semseg"])


@pytest.mark.parametrize("index", range(6))
def test_arrays_labels_boxes_and_lanes_are_well_formed(index):
    ex = render_scene(0, index, H, W)
    assert ex["image"].shape == (H, W, 3) and ex["image"].dtype == np.uint8
    assert ex["semseg"].shape == (H, W) and ex["semseg"].dtype == np.uint8
    assert ex["depth"].shape == (H, W) and ex["depth"].dtype == np.float32
    assert set(np.unique(ex["semseg"])) <= VALID_IDS
    # Sky is exactly the zero-depth set; everything else has positive, bounded depth.
    np.testing.assert_array_equal(ex["semseg"] == synthetic.SKY, ex["depth"] == 0)
    assert ex["depth"].min() >= 0 and ex["depth"].max() < 200
    boxes = ex["boxes"]
    assert boxes.dtype == np.float32 and boxes.shape == (len(ex["box_classes"]), 4) == (len(ex["box_occluded"]), 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert set(ex["box_classes"].tolist()) <= set(synthetic.INSTANCE_CLASSES)
    assert ex["box_occluded"].dtype == bool
    lanes = ex["lanes"]
    assert lanes.shape[1:] == (synthetic.LANE_POINTS, 2) and lanes.shape[0] == len(ex["lane_classes"]) >= 1
    assert np.isfinite(lanes).all()
    assert (lanes >= -1e-3).all() and (lanes[..., 0] <= W + 1e-3).all() and (lanes[..., 1] <= H + 1e-3).all()
    assert set(ex["lane_classes"].tolist()) <= {0, 1}
    assert 0 <= ex["weather"] < len(synthetic.WEATHERS) and 0 <= ex["time_of_day"] < len(synthetic.TIMES_OF_DAY)


def test_unoccluded_boxes_are_filled_with_their_class():
    checked = 0
    for index in range(8):
        ex = render_scene(0, index, 128, 256)
        for (x1, y1, x2, y2), cls, occluded in zip(ex["boxes"].astype(int), ex["box_classes"], ex["box_occluded"]):
            if not occluded and (x2 - x1) * (y2 - y1) >= 20:
                assert (ex["semseg"][y1:y2, x1:x2] == cls).mean() > 0.5
                checked += 1
    assert checked >= 5


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ground_depth_follows_the_pinhole_model(index):
    """Ground pixel in row v: z = h f / ((v + 0.5 - cy) cos(pitch) + f sin(pitch)).

    With pitch 0 this is z = h f / (v + 0.5 - cy).
    """
    scene = sample_scene(0, index)
    for camera in (Camera(height=scene.camera.height, pitch=0.0), scene.camera):
        ex = render(dataclasses.replace(scene, camera=camera), H, W)
        f, cy = ex["intrinsics"][0, 0], ex["intrinsics"][1, 2]
        assert f == pytest.approx(W / 2 / np.tan(np.deg2rad(synthetic.HFOV_DEG) / 2))
        rows = np.arange(H)[:, None] + 0.5 - cy
        expected = camera.height * f / (rows * np.cos(camera.pitch) + f * np.sin(camera.pitch))
        ground = np.isin(ex["semseg"], GROUND_IDS)
        assert ground.sum() > 0.2 * H * W
        np.testing.assert_allclose(ex["depth"][ground], np.broadcast_to(expected, (H, W))[ground], rtol=1e-5)
    # Zero pitch: the bottom row, hand-computed for h and W = 128 (f = 64 / tan(32.5 deg) = 100.46).
    ex = render(dataclasses.replace(scene, camera=Camera(height=1.5, pitch=0.0)), H, W)
    if ex["semseg"][H - 1, 0] in GROUND_IDS:
        assert ex["depth"][H - 1, 0] == pytest.approx(1.5 * 100.4619 / 31.5, rel=1e-4)


def _single_car_scene(obstacles=()):
    """Pitch-0 camera at 1.5 m; a car box X [-1, 1], Y [0, 1.2], Z [10, 14]; optional pole boxes (lo, hi)."""
    scene = sample_scene(0, 0)
    lo = np.array([(-1.0, 0.0, 10.0)] + [o[0] for o in obstacles])
    hi = np.array([(1.0, 1.2, 14.0)] + [o[1] for o in obstacles])
    n = len(lo)
    return dataclasses.replace(
        scene, camera=Camera(height=1.5, pitch=0.0), lo=lo, hi=hi,
        part_class=np.array([synthetic.CAR] + [synthetic.POLE] * (n - 1), np.uint8),
        part_albedo=np.full((n, 3), 0.5), part_instance=np.array([0] + [-1] * (n - 1), np.int32),
        part_windows=np.zeros((n, 3)), instance_class=np.array([synthetic.CAR], np.int32))


def test_box_is_the_hand_computed_silhouette_and_occlusion_is_flagged():
    # 256 px wide: f = 128 / tan(32.5 deg) = 200.92, cx = 128, cy = 64.  Columns: front face X = +-1 at Z = 10
    # -> u in 128 +- 20.09 -> pixel centres 108.5 .. 147.5.  Rows: top face far edge (Y 1.2, Z 14)
    # v = 64 + 200.92 * 0.3 / 14 = 68.31 -> first row 68; bottom (Y 0, Z 10) v = 64 + 30.14 -> last row 93.
    # The front face (rows from v = 64 + 200.92 * 0.3 / 10 = 70.03, i.e. row 70) fills its rectangle.
    ex = render(_single_car_scene(), 128, 256)
    np.testing.assert_array_equal(ex["boxes"], [[108, 68, 148, 94]])
    np.testing.assert_array_equal(ex["box_classes"], [synthetic.CAR])
    assert not ex["box_occluded"][0]
    assert (ex["semseg"][70:94, 108:148] == synthetic.CAR).all()
    assert (ex["semseg"][67] != synthetic.CAR).all() and (ex["semseg"][94] != synthetic.CAR).all()
    # A pole in front covering the car's left half (X [-1.5, 0] at Z 5): the box stays, the flag is set.
    ex = render(_single_car_scene([((-1.5, 0.0, 5.0), (0.0, 4.0, 5.3))]), 128, 256)
    np.testing.assert_array_equal(ex["boxes"], [[108, 68, 148, 94]])
    assert ex["box_occluded"][0]
    assert 0.4 < (ex["semseg"][70:94, 108:148] == synthetic.CAR).mean() < 0.6


def test_truncated_object_is_flagged_and_clipped():
    scene = _single_car_scene()
    shifted = dataclasses.replace(scene, lo=scene.lo + [6.0, 0, 0], hi=scene.hi + [6.0, 0, 0])  # X [5, 7] at Z 10
    ex = render(shifted, 128, 256)
    assert ex["boxes"][0, 2] == 256 and ex["box_occluded"][0]


def test_same_scene_at_twice_the_resolution():
    agreement = []
    for index in range(4):
        small, large = render_scene(1, index, H, W), render_scene(1, index, 2 * H, 2 * W)
        agreement.append((large["semseg"][1::2, 1::2] == small["semseg"]).mean())
        # Lane polylines are projections of the same 3D lines: exactly twice the pixel coordinates.
        np.testing.assert_allclose(large["lanes"], 2 * small["lanes"], atol=1e-3)
        assert large["weather"] == small["weather"] and large["time_of_day"] == small["time_of_day"]
    assert min(agreement) > 0.93 and np.mean(agreement) > 0.95


def test_source_splits_and_errors():
    train, val = SyntheticScenes("train", 5, H, W), SyntheticScenes("val", 5, H, W)
    assert len(train) == 5 and "split='train'" in repr(train)
    np.testing.assert_array_equal(train[2]["semseg"], render_scene(train.scene_seed, 2, H, W)["semseg"])
    train_images = [train[i]["image"] for i in range(5)]
    assert not any(np.array_equal(v, t) for v in (val[i]["image"] for i in range(5)) for t in train_images)
    assert SyntheticScenes("val", 5, H, W, seed=1).scene_seed not in (train.scene_seed, val.scene_seed)
    with pytest.raises(ValueError, match="'test'"):
        SyntheticScenes("test", 5, H, W)
    with pytest.raises(ValueError, match="height"):
        SyntheticScenes("train", 5, 4, W)
    with pytest.raises(ValueError, match="num_examples"):
        SyntheticScenes("train", 0, H, W)
    with pytest.raises(IndexError):
        train[5]
