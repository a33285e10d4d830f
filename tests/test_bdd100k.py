"""BDD100K reader and lane geometry: tiny fixtures in the 2018 and 2020 label layouts, hand-computed geometry."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import bdd100k, lane_geometry
from jaxvision.data.bdd100k import BDD100K, DETECTION_CLASSES, LANE_CLASSES, SCENES, TIMES_OF_DAY, WEATHERS

# Fixture images 160 x 90, read at scale 0.5 (80 x 45) and cropped to 40 x 80: rows 2..42 of the resized image.
IMAGE_H, IMAGE_W, HEIGHT, WIDTH, TOP = 90, 160, 40, 80, 2
LANE_POINTS = 8


def box(category, x1, y1, x2, y2, occluded=False):
    return {"category": category, "attributes": {"occluded": occluded, "truncated": False},
            "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


def poly(vertices, types=None):
    return [{"vertices": vertices, "types": types or "L" * len(vertices), "closed": False}]


def lane_2018(lane_type, vertices, types=None):
    return {"category": "lane", "attributes": {"laneDirection": "parallel", "laneStyle": "solid",
                                               "laneType": lane_type}, "poly2d": poly(vertices, types)}


def write_image(path, k):
    """Rows encode y (value 2y), so the crop offset can be read back; k shifts the green channel."""
    image = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    image[..., 0] = 2 * np.arange(IMAGE_H)[:, None]
    image[..., 1] = 40 * k
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def write_json(path, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(frames, f)


FRAMES_2018 = [
    {"name": "a.jpg", "attributes": {"weather": "rainy", "scene": "highway", "timeofday": "night"},
     "labels": [box("car", 20, 10, 60, 50),
                box("person", 100, 0, 120, 20, occluded=True),         # cut by the top of the window
                box("bike", 0, 0, 10, 3),                              # above the window: dropped
                box("motor", 150, 80, 170, 95),                        # cut by the right and the bottom
                box("trailer", 10, 10, 20, 20),                        # not a detection class: skipped
                {"category": "drivable area", "attributes": {"areaType": "direct"},
                 "poly2d": poly([[0, 60], [160, 60], [160, 90]])},
                lane_2018("single white", [[100, 10], [100, 80]]),     # two edges of one line, 6 px apart,
                lane_2018("single white", [[106, 80], [106, 10]]),     # drawn in opposite directions
                lane_2018("single white", [[20, 10], [20, 80]]),       # another line far away
                lane_2018("single yellow", [[109, 10], [109, 80]])]},  # 3 px away, another class
    {"name": "b.jpg", "attributes": {"weather": "hail", "scene": "highway"}},
    {"name": "c.jpg", "attributes": {"weather": "clear", "scene": "city street", "timeofday": "daytime"},
     "labels": [lane_2018("zigzag", [[40, 0], [40, 60]]),                  # unknown class, crosses the top
                lane_2018("single white", [[0, 1], [60, 0], [100, 2]]),    # above the window: dropped
                lane_2018("crosswalk", [[10, 70], [40, 50], [80, 90], [120, 70]], "LCCL")]},
    {"name": "no_image.jpg", "labels": [box("car", 0, 0, 10, 10)]},
]


@pytest.fixture
def root_2018(tmp_path):
    for k, name in enumerate(["a", "b", "c"]):
        write_image(f"{tmp_path}/images/100k/train/{name}.jpg", k)
    write_json(f"{tmp_path}/labels/bdd100k_labels_images_train.json", FRAMES_2018)
    return str(tmp_path)


@pytest.fixture
def root_2020(tmp_path):
    for k, name in enumerate(["a", "b", "c"]):
        write_image(f"{tmp_path}/images/100k/val/{name}.jpg", k)
    write_json(f"{tmp_path}/labels/det_20/det_val.json", [
        {"name": "a.jpg", "attributes": {"weather": "foggy", "scene": "tunnel", "timeofday": "dawn/dusk"},
         "labels": [box("pedestrian", 20, 10, 60, 50, occluded=True), box("other vehicle", 0, 0, 9, 9),
                    box("traffic sign", 80, 20, 100, 30)]},
        {"name": "b.jpg", "attributes": {"weather": "snowy", "scene": "parking lot", "timeofday": "daytime"}}])
    write_json(f"{tmp_path}/labels/lane/polygons/lane_val.json", [
        {"name": "a.jpg", "labels": [
            {"category": "double yellow", "attributes": {"laneDirection": "parallel", "laneStyle": "solid"},
             "poly2d": poly([[30, 80], [50, 10]])},
            {"category": "road curb", "attributes": {"laneDirection": "parallel", "laneStyle": "solid"},
             "poly2d": poly([[150, 80], [120, 10]])}]},
        {"name": "c.jpg", "attributes": {"weather": "clear", "scene": "residential", "timeofday": "night"},
         "labels": [{"category": "single blue", "poly2d": poly([[30, 80], [50, 10]])}]}])
    return str(tmp_path)


def reader(root, split="train", **kw):
    return BDD100K(root, split, height=HEIGHT, width=WIDTH, lane_points=LANE_POINTS, **kw)


def to_window(points):
    """Original pixels -> output pixels: scale 0.5, crop TOP rows."""
    return np.asarray(points, np.float64) * 0.5 - [0, TOP]


# ------------------------------------------------------------------------------------------------ lane geometry

def cubic(p0, c1, c2, p1, t):
    t = np.asarray(t)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t ** 2 * c2 + t ** 3 * p1


def test_sample_poly2d_bezier_matches_the_analytic_cubic():
    control = np.float64([[0, 0], [30, 60], [70, -20], [100, 40]])
    points = lane_geometry.sample_poly2d(control, "LCCL", step=2.0)
    dense = cubic(*control, np.linspace(0, 1, 20001))
    nearest = np.linalg.norm(points[:, None] - dense[None], axis=-1).min(axis=1)
    assert nearest.max() < 0.1
    np.testing.assert_allclose(points[[0, -1]], control[[0, 3]])
    spacing = np.linalg.norm(np.diff(points, axis=0), axis=1)
    assert 1.9 < spacing.min() and spacing.max() < 2.1                      # the cubic at equal arc steps


def test_sample_poly2d_lines_mixed_and_closed():
    points = lane_geometry.sample_poly2d([[0, 0], [10, 0]], "LL", step=4.0)   # ceil(10 / 4) = 3 intervals
    np.testing.assert_allclose(points, [[0, 0], [10 / 3, 0], [20 / 3, 0], [10, 0]])
    mixed = lane_geometry.sample_poly2d([[0, 0], [0, 10], [5, 15], [15, 15], [20, 10]], "LLCCL", step=1.0)
    np.testing.assert_allclose(mixed[:11, 1], np.arange(11))                  # the straight part, 1 px apart
    np.testing.assert_allclose(mixed[-1], [20, 10])
    closed = lane_geometry.sample_poly2d([[0, 0], [4, 0], [4, 4]], "LLL", step=4.0, closed=True)
    np.testing.assert_allclose(closed, [[0, 0], [4, 0], [4, 4], [2, 2], [0, 0]])
    assert lane_geometry.sample_poly2d([[3, 4]], "L", step=1.0).tolist() == [[3, 4]]


@pytest.mark.parametrize("vertices, types", [([[0, 0], [1, 1]], "L"), ([[0, 0], [1, 1], [2, 2]], "LCL"),
                                             ([[0, 0], [1, 1]], "CL"), ([0, 1, 2], "LLL")])
def test_sample_poly2d_rejects_malformed_polys(vertices, types):
    with pytest.raises(ValueError, match="poly2d"):
        lane_geometry.sample_poly2d(vertices, types, step=1.0)


def vertical_line(x, y0=0.0, y1=100.0, n=51):
    return np.stack([np.full(n, float(x)), np.linspace(y0, y1, n)], axis=1)


def test_dtw_distance_is_the_mean_aligned_distance():
    a = vertical_line(10)
    distance, path = lane_geometry.dtw(a, a)
    assert distance == pytest.approx(0, abs=1e-9) and path == [(i, i) for i in range(len(a))]
    distance, path = lane_geometry.dtw(a, a + [6, 0])                        # offset copies: the offset
    assert distance == pytest.approx(6.0) and path == [(i, i) for i in range(len(a))]
    distance, path = lane_geometry.dtw(vertical_line(0, n=11), vertical_line(0, n=21))
    assert path[0] == (0, 0) and path[-1] == (10, 20) and distance < 2.5    # 21 pairs, each within 5 px
    steps = np.diff(np.asarray(path), axis=0)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=1) >= 1).all()


def test_dtw_matches_the_textbook_recursion_and_its_lower_bound():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a, b = rng.normal(size=(rng.integers(1, 12), 2)) * 5, rng.normal(size=(rng.integers(1, 12), 2)) * 5
        cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
        total = np.full((len(a) + 1, len(b) + 1), np.inf)
        total[0, 0] = 0
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
        distance, path = lane_geometry.dtw(a, b)
        assert sum(cost[i, j] for i, j in path) == pytest.approx(total[-1, -1])
        assert distance == pytest.approx(total[-1, -1] / len(path))
        bound = lane_geometry._dtw_lower_bound(a, b)
        assert bound <= distance + 1e-9 and bound <= lane_geometry.dtw(a, b[::-1])[0] + 1e-9


def test_resample_polyline_is_equally_spaced():
    points = lane_geometry.resample_polyline([[0, 0], [10, 0], [10, 5]], 16)  # length 15: one px apart
    np.testing.assert_allclose(np.linalg.norm(np.diff(points, axis=0), axis=1), 1.0)
    np.testing.assert_allclose(points[[0, 10, -1]], [[0, 0], [10, 0], [10, 5]])
    uneven = lane_geometry.resample_polyline([[0, 0], [1, 0], [7, 0], [10, 0]], 6)
    np.testing.assert_allclose(uneven, np.stack([np.linspace(0, 10, 6), np.zeros(6)], 1))
    assert lane_geometry.resample_polyline([[2, 3]], 4).tolist() == [[2, 3]] * 4
    assert lane_geometry.resample_polyline([[2, 3], [2, 3]], 3).tolist() == [[2, 3]] * 3


def distance_to_line(points, p, q):
    d = (q - p) / np.linalg.norm(q - p)
    r = points - p
    return np.abs(r[:, 0] * d[1] - r[:, 1] * d[0])


def test_deduplicate_merges_the_two_edges_of_a_line_into_its_centre():
    start, end = np.float64([100, 200]), np.float64([150, 0])        # a slanted line, edges 6 px apart in x
    edge = lane_geometry.sample_poly2d([start, end], "LL", 4.0)
    other_edge = lane_geometry.sample_poly2d([end + [6, 0], start + [6, 0]], "LL", 4.0)    # drawn backwards
    far = lane_geometry.sample_poly2d([start - [30, 0], end - [30, 0]], "LL", 4.0)
    lanes, classes = lane_geometry.deduplicate_lanes([edge, other_edge, far], [6, 6, 6], threshold=10.0)
    assert classes == [6, 6]
    centre = lanes[0]
    assert distance_to_line(centre, start + [3, 0], end + [3, 0]).max() < 0.5
    np.testing.assert_allclose(centre[[0, -1]], [start + [3, 0], end + [3, 0]], atol=0.5)   # edge's direction
    np.testing.assert_array_equal(lanes[1], far)


def test_deduplicate_never_merges_other_classes_and_pairs_greedily():
    a, b, c = vertical_line(0), vertical_line(3), vertical_line(100)
    lanes, classes = lane_geometry.deduplicate_lanes([a, b, c], [6, 7, 6], threshold=10.0)
    assert classes == [6, 7, 6] and all(np.array_equal(x, y) for x, y in zip(lanes, [a, b, c]))
    # a-b 6 px, b-c 1 px: the closer pair merges first, a stays.
    lanes, classes = lane_geometry.deduplicate_lanes([vertical_line(0), vertical_line(6), vertical_line(7)],
                                                     [1, 1, 1], threshold=10.0)
    assert classes == [1, 1]
    np.testing.assert_allclose(lanes[0][:, 0], 0)
    np.testing.assert_allclose(lanes[1][:, 0], 6.5)


# ------------------------------------------------------------------------------------------------ reader

def test_constants_follow_the_thesis():
    assert len(DETECTION_CLASSES) == 10 and len(LANE_CLASSES) == 8
    assert (len(WEATHERS), len(SCENES), len(TIMES_OF_DAY)) == (7, 7, 4)


def test_reads_the_2018_layout(root_2018):
    ds = reader(root_2018)
    assert len(ds) == 3 and "3 frames" in repr(ds)                      # the frame without image is skipped
    a, b, c = ds[0], ds[1], ds[2]
    assert set(a) == {"image", "boxes", "box_classes", "box_occluded", "lanes", "lane_classes", "weather", "scene",
                      "time_of_day"}
    assert a["image"].shape == (HEIGHT, WIDTH, 3) and a["image"].dtype == np.uint8
    # Row r of the window is resized row r + 2, the mean of original rows 2r + 4, 2r + 5: value 4r + 9.
    np.testing.assert_allclose(a["image"][:, 40, 0], 4 * np.arange(HEIGHT) + 9, atol=3)
    assert abs(int(c["image"][20, 40, 1]) - 80) <= 3

    np.testing.assert_allclose(a["boxes"], [[10, 3, 30, 23], [50, 0, 60, 8], [75, 38, 80, 40]])
    assert a["boxes"].dtype == np.float32
    assert [DETECTION_CLASSES[k] for k in a["box_classes"]] == ["car", "pedestrian", "motorcycle"]
    assert a["box_occluded"].tolist() == [False, True, False]
    assert (a["weather"], a["scene"], a["time_of_day"]) == (WEATHERS.index("rainy"), SCENES.index("highway"),
                                                            TIMES_OF_DAY.index("night"))
    assert a["weather"].dtype == np.int32

    # The two white edges became their centre line x = 103; the far white and the yellow line stay.
    assert [LANE_CLASSES[k] for k in a["lane_classes"]] == ["single white", "single white", "single yellow"]
    assert a["lanes"].shape == (3, LANE_POINTS, 2) and a["lanes"].dtype == np.float32
    y = np.linspace(3, 38, LANE_POINTS)
    np.testing.assert_allclose(a["lanes"][0], np.stack([np.full(LANE_POINTS, 51.5), y], 1), atol=0.5)
    np.testing.assert_allclose(a["lanes"][1], np.stack([np.full(LANE_POINTS, 10.0), y], 1), atol=1e-4)
    np.testing.assert_allclose(a["lanes"][2], np.stack([np.full(LANE_POINTS, 54.5), y], 1), atol=1e-4)

    assert b["boxes"].shape == (0, 4) and b["box_classes"].shape == (0,) and b["lanes"].shape == (0, LANE_POINTS, 2)
    assert (b["weather"], b["scene"], b["time_of_day"]) == (WEATHERS.index("undefined"), SCENES.index("highway"),
                                                            TIMES_OF_DAY.index("undefined"))

    assert [LANE_CLASSES[k] for k in c["lane_classes"]] == ["single other", "crosswalk"]
    np.testing.assert_allclose(c["lanes"][0], np.stack([np.full(LANE_POINTS, 20.0),                 # cut at y = 0
                                                        np.linspace(0, 28, LANE_POINTS)], 1), atol=1e-4)
    crosswalk = cubic(*to_window([[10, 70], [40, 50], [80, 90], [120, 70]]), np.linspace(0, 1, 20001))
    distance = np.linalg.norm(c["lanes"][1][:, None] - crosswalk[None], axis=-1).min(axis=1)
    assert distance.max() < 0.1                                          # lane_step 4 px: chords within 0.1 px


def test_pads_when_the_window_is_larger(root_2018):
    example = BDD100K(root_2018, "train", height=50, width=90)           # resized 45 x 80 at (3, 5) in 50 x 90
    image = example[0]["image"]
    assert image.shape == (50, 90, 3)
    assert image[:3].max() == 0 and image[48:].max() == 0 and image[:, :5].max() == 0 and image[:, 85:].max() == 0
    np.testing.assert_allclose(image[3:48, 45, 0], 4 * np.arange(45) + 1, atol=3)     # resized row r: 4r + 1
    np.testing.assert_allclose(example[0]["boxes"][0], [15, 8, 35, 28])


def test_reads_the_2020_layout(root_2020):
    ds = reader(root_2020, "val")
    assert len(ds) == 3
    a, b, c = ds[0], ds[1], ds[2]
    np.testing.assert_allclose(a["boxes"], [[10, 3, 30, 23], [40, 8, 50, 13]])
    assert [DETECTION_CLASSES[k] for k in a["box_classes"]] == ["pedestrian", "traffic sign"]
    assert a["box_occluded"].tolist() == [True, False]
    assert (a["weather"], a["scene"], a["time_of_day"]) == (WEATHERS.index("foggy"), SCENES.index("tunnel"),
                                                            TIMES_OF_DAY.index("dawn/dusk"))
    assert [LANE_CLASSES[k] for k in a["lane_classes"]] == ["double yellow", "road curb"]
    np.testing.assert_allclose(a["lanes"][:, [0, -1]], [to_window([[30, 80], [50, 10]]),
                                                        to_window([[150, 80], [120, 10]])], atol=1e-4)
    assert b["lanes"].shape == (0, LANE_POINTS, 2) and b["boxes"].shape == (0, 4)      # no lane entry: no lanes
    assert b["weather"] == WEATHERS.index("snowy")
    assert c["boxes"].shape == (0, 4) and c["lane_classes"].tolist() == [LANE_CLASSES.index("single other")]
    assert (c["scene"], c["time_of_day"]) == (SCENES.index("residential"), TIMES_OF_DAY.index("night"))

    os.remove(f"{root_2020}/labels/lane/polygons/lane_val.json")                        # the lane file is optional
    assert reader(root_2020, "val")[0]["lanes"].shape == (0, LANE_POINTS, 2)


def test_combined_file_is_preferred(root_2018):
    write_json(f"{root_2018}/labels/det_20/det_train.json", [{"name": "a.jpg"}])
    assert len(reader(root_2018)) == 3


# ------------------------------------------------------------------------------------------------ errors

def test_missing_paths_raise_file_not_found(tmp_path, root_2018):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="(?s)nowhere.*images/100k"):
        BDD100K(missing, "train")
    with pytest.raises(FileNotFoundError, match="bdd100k_labels_images_val.json.*det_val.json"):
        BDD100K(root_2018, "val")
    os.rename(f"{root_2018}/images", f"{root_2018}/moved")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{root_2018}/images/100k/train")):
        BDD100K(root_2018, "train")


def test_unknown_split(root_2018):
    with pytest.raises(ValueError, match="'test'"):
        BDD100K(root_2018, "test")


@pytest.mark.parametrize("content, message", [
    ("[{\"name\": \"a.jpg\"", "not a valid JSON"),
    ("{\"name\": \"a.jpg\"}", "expected a JSON list"),
    (json.dumps([{"name": "a.jpg"}, {"labels": []}]), r"frame 1 \(None\).*\"name\""),
    (json.dumps([{"name": "a.jpg", "labels": [{"category": "car"}]}]), "frame 0 .a.jpg.*box2d"),
    (json.dumps([{"name": "a.jpg", "labels": [lane_2018("single white", [[0, 0], [1, 1]], "LC")]}]),
     "frame 0 .a.jpg.*types"),
])
def test_malformed_labels_raise_naming_the_file(root_2018, content, message):
    path = f"{root_2018}/labels/bdd100k_labels_images_train.json"
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(ValueError, match=f"{re.escape(path)}.*{message}"):
        reader(root_2018)


def test_no_frame_with_an_image(root_2018):
    write_json(f"{root_2018}/labels/bdd100k_labels_images_train.json", [{"name": "elsewhere.jpg"}])
    with pytest.raises(ValueError, match="images/100k/train"):
        reader(root_2018)


def test_corrupt_image_raises_naming_it(root_2018):
    path = f"{root_2018}/images/100k/train/b.jpg"
    with open(path, "wb") as f:
        f.write(b"not a jpeg")
    ds = reader(root_2018)
    assert ds[0]["image"].shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(ValueError, match=re.escape(path)):
        ds[1]
    with pytest.raises(IndexError):
        ds[3]


def test_read_labels_keeps_the_raw_records(root_2018):
    records = bdd100k.read_labels(f"{root_2018}/labels/bdd100k_labels_images_train.json")
    assert list(records) == ["a.jpg", "b.jpg", "c.jpg", "no_image.jpg"]
    assert len(records["a.jpg"].polys) == 4 and records["a.jpg"].boxes.shape == (4, 4)


def test_bdd100k_feeds_the_adas_pipeline(root_2018):
    """The thesis config on the fixture: encoded targets for 10 object and 8 lane classes, tags, padded truth."""
    from jaxvision.config import load_config_file
    from jaxvision.data import pipeline
    config = load_config_file("configs/adas/mbv2_bifpn.py")
    config.data.update(root=root_2018, height=HEIGHT, width=WIDTH, num_threads=1)
    config.data.augment.update(flip=False, scale_range=(1.0, 1.0), color_jitter=0.0)
    batch = next(pipeline.make_train_iterator(config.data, 3, seed=0, process_index=0, process_count=1))
    assert batch["heatmap"].shape == (3, HEIGHT // 4, WIDTH // 4, 10)
    assert batch["lane_heatmap"].shape == (3, HEIGHT // 4, WIDTH // 4, 8)
    source = reader(root_2018)
    boxes = sorted(len(source[i]["boxes"]) for i in range(len(source)))
    assert sorted(batch["gt_box_mask"].sum(1).astype(int).tolist()) == boxes
    assert sorted(batch["det_mask"].sum(1).astype(int).tolist()) == boxes
    weathers = sorted(int(source[i]["weather"]) for i in range(len(source)))
    assert sorted(batch["weather"].tolist()) == weathers
