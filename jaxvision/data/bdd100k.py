"""BDD100K (Yu et al., CVPR 2020) reader: examples for the ADAS multi-task model (thesis Sec. 3.4.1).

On-disk layout of the official release (doc.bdd100k.com), as described by `LAYOUT` below. The combined 2018
label file is a JSON list of frames:

    {"name": "b1c66a42-6f7d68ca.jpg",
     "attributes": {"weather": "clear", "scene": "city street", "timeofday": "daytime"},
     "labels": [{"category": "car", "attributes": {"occluded": false, "truncated": false, ...},
                 "box2d": {"x1": ..., "y1": ..., "x2": ..., "y2": ...}},
                {"category": "lane", "attributes": {"laneDirection": "parallel", "laneStyle": "solid",
                                                    "laneType": "single white"},
                 "poly2d": [{"vertices": [[x, y], ...], "types": "LCCL", "closed": false}]},
                {"category": "drivable area", ...}]}

The 2018 names person / bike / motor are read as pedestrian / bicycle / motorcycle. Without the combined
file, the 2020 split files are read instead: `det_20/det_{split}.json` (the same frames, boxes only) and,
when present, `lane/polygons/lane_{split}.json`, whose labels are the lanes with the lane class as their
category; the two are merged by image name: a frame without a lane entry has no lanes, a frame only in
the lane file has no boxes (and the lane file's frame attributes). Drivable areas and the categories
outside the 10 detection classes are skipped; an unknown lane class reads as "single other"; an unknown
or missing weather / scene / time of day reads as "undefined".

Geometry (thesis: 1280 x 720 images, "down scaled with a factor of 2 and then cropped to ... 640 x 320"):
the image is resized by `scale` (bilinear) and the central `height` x `width` window is cut out (zero
padding where the resized image is smaller). Coordinates follow: x' = x * W_resized / W - left, the same
for y. Boxes are clipped to the window and dropped when nothing is left. `box_occluded` is the dataset's
"occluded" attribute, the thesis' "binary label for the occlusion state".

Lanes (thesis Sec. 3.4.1, Fig. 3.8): BDD100K draws each painted line by its two edges. Every poly2d is
sampled into a dense polyline (`lane_geometry.sample_poly2d`, a point every `lane_step` px), then the
edge pairs of each class are merged into their centre line (`lane_geometry.deduplicate_lanes`: DTW
distance below `dedup_threshold` px, average along the DTW alignment), both in original pixels. The
merged lanes are then moved into the window like the boxes, cut to their longest part inside it (lanes
with fewer than 2 points inside are dropped) and resampled to `lane_points` points equally spaced by
arc length. The de-duplication runs when an example is read, not once ahead as in the thesis: the
labels are parsed into compact per-frame records when the reader is built, the DTW is left to the
(parallel) data-loading workers. A DTW of two 150-point lanes takes about 2 ms; pairs that cannot match
are ruled out by a cheaper lower bound, so a frame with 16 overlapping lanes of one class takes ~50-80 ms.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxvision.data import files, lane_geometry

SPLITS = ("train", "val")
DETECTION_CLASSES = ("car", "truck", "bus", "train", "motorcycle", "bicycle", "pedestrian", "rider",
                     "traffic light", "traffic sign")
CATEGORY_ALIASES = {"person": "pedestrian", "bike": "bicycle", "motor": "motorcycle"}     # 2018 names
LANE_CLASSES = ("crosswalk", "double other", "double white", "double yellow", "road curb", "single other",
                "single white", "single yellow")
UNKNOWN_LANE_CLASS = "single other"
WEATHERS = ("rainy", "snowy", "clear", "overcast", "undefined", "partly cloudy", "foggy")
SCENES = ("tunnel", "residential", "parking lot", "undefined", "city street", "gas stations", "highway")
TIMES_OF_DAY = ("daytime", "night", "dawn/dusk", "undefined")

LAYOUT = """{root}/images/100k/{split}/{name}.jpg
{root}/labels/bdd100k_labels_images_{split}.json          2018 release: boxes, lanes and frame attributes
  or, without it, the 2020 release:
{root}/labels/det_20/det_{split}.json                      boxes and frame attributes
{root}/labels/lane/polygons/lane_{split}.json              lanes (optional)"""

_DETECTION_INDEX = {name: k for k, name in enumerate(DETECTION_CLASSES)}
_DETECTION_INDEX.update({alias: _DETECTION_INDEX[name] for alias, name in CATEGORY_ALIASES.items()})


class _Frame(NamedTuple):
    """One labelled image, coordinates in original pixels."""
    name: str
    boxes: np.ndarray               # float32 [N, 4] x1, y1, x2, y2
    box_classes: np.ndarray         # int32 [N]
    box_occluded: np.ndarray        # bool [N]
    polys: tuple                    # (vertices float32 [n, 2], types) per lane poly2d, closed ones closed
    poly_classes: tuple             # int lane class per poly
    weather: int
    scene: int
    time_of_day: int


def _index(table: tuple, value) -> int:
    """Index of `value` in an attribute table, that of "undefined" when unknown."""
    return table.index(value if value in table else "undefined")


def _lane_class(name) -> int:
    return LANE_CLASSES.index(name if name in LANE_CLASSES else UNKNOWN_LANE_CLASS)


def _parse_frame(frame: dict, lane_file: bool) -> _Frame:
    """The record of one frame dict. In a lane file every label is a lane whose category is its class;
    elsewhere boxes are the detection categories and lanes the "lane" labels with their laneType."""
    if not isinstance(frame, dict) or not isinstance(frame.get("name"), str):
        raise ValueError("expected a frame object with a string \"name\"")
    boxes, box_classes, box_occluded, polys, poly_classes = [], [], [], [], []
    for label in frame.get("labels") or []:
        category, attributes = label["category"], label.get("attributes") or {}
        if lane_file or category == "lane":
            lane_class = _lane_class(category if lane_file else attributes.get("laneType"))
            for poly in label.get("poly2d") or []:
                vertices, types = lane_geometry.check_poly2d(poly["vertices"], poly["types"], bool(poly.get("closed")))
                polys.append((vertices.astype(np.float32), types))
                poly_classes.append(lane_class)
        elif category in _DETECTION_INDEX:
            box = label["box2d"]
            boxes.append([float(box[key]) for key in ("x1", "y1", "x2", "y2")])
            box_classes.append(_DETECTION_INDEX[category])
            box_occluded.append(bool(attributes.get("occluded", False)))
    attributes = frame.get("attributes") or {}
    return _Frame(frame["name"], np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(box_classes, np.int32),
                  np.asarray(box_occluded, bool), tuple(polys), tuple(poly_classes),
                  _index(WEATHERS, attributes.get("weather")), _index(SCENES, attributes.get("scene")),
                  _index(TIMES_OF_DAY, attributes.get("timeofday")))


def read_labels(path: str, lane_file: bool = False) -> dict[str, _Frame]:
    """{image name: frame record} of a BDD100K label file; ValueError naming the file (and the frame index)
    when it is not a JSON list of well-formed frames."""
    try:
        with open(path) as f:
            frames = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from e
    if not isinstance(frames, list):
        raise ValueError(f"{path}: expected a JSON list of frames, got a {type(frames).__name__}")
    records = {}
    for index, frame in enumerate(frames):
        try:
            record = _parse_frame(frame, lane_file)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            name = frame.get("name") if isinstance(frame, dict) else None
            raise ValueError(f"{path} frame {index} ({name}): malformed label: {type(e).__name__}: {e}") from e
        records[record.name] = record
    return records


def _crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The `height` x `width` window of `image` at (top, left), zeros where it lies outside the image."""
    out = np.zeros((height, width, image.shape[2]), image.dtype)
    y0, y1 = max(top, 0), min(top + height, image.shape[0])
    x0, x1 = max(left, 0), min(left + width, image.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def _longest_inside_part(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """The longest run of consecutive points of a polyline inside [0, width] x [0, height]."""
    inside = (points >= 0).all(axis=1) & (points[:, 0] <= width) & (points[:, 1] <= height)
    cuts = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    runs = [run for run, flags in zip(np.split(points, cuts), np.split(inside, cuts)) if flags[0]]
    return max(runs, key=len, default=points[:0])


class BDD100K:
    """grain RandomAccessDataSource of one BDD100K split: the frames of the label file(s) whose image exists.

    Example (the keys of `synthetic.render_scene` that BDD100K labels): image uint8 [height, width, 3];
    boxes float32 [N, 4] (x1, y1, x2, y2 pixels, inside the image); box_classes int32 [N] (index into
    DETECTION_CLASSES); box_occluded bool [N]; lanes float32 [L, lane_points, 2] (pixel polylines inside
    the image); lane_classes int32 [L] (index into LANE_CLASSES); weather, scene, time_of_day int32
    (indices into WEATHERS, SCENES, TIMES_OF_DAY). `lane_step` and `dedup_threshold` are in original
    pixels. Missing folders or label files raise FileNotFoundError and malformed label files ValueError
    at construction; an unreadable image raises ValueError naming it when read.
    """

    def __init__(self, root: str, split: str, height: int = 320, width: int = 640, scale: float = 0.5,
                 lane_points: int = 32, lane_step: float = 4.0, dedup_threshold: float = 10.0):
        if split not in SPLITS:
            raise ValueError(f"unknown BDD100K split {split!r}: expected one of {SPLITS}")
        if min(height, width) < 1 or scale <= 0 or lane_points < 2 or lane_step <= 0:
            raise ValueError(f"BDD100K: need height, width >= 1, scale > 0, lane_points >= 2, lane_step > 0; got "
                             f"{height}, {width}, {scale}, {lane_points}, {lane_step}")
        self.root, self.split, self.height, self.width, self.scale = root, split, height, width, scale
        self.lane_points, self.lane_step, self.dedup_threshold = lane_points, lane_step, dedup_threshold
        expected = f"; expected the BDD100K layout\n{LAYOUT}"
        if not os.path.isdir(root):
            raise FileNotFoundError(f"BDD100K root folder not found: {root}{expected}")
        self.image_dir = os.path.join(root, "images", "100k", split)
        combined = os.path.join(root, "labels", f"bdd100k_labels_images_{split}.json")
        detections = os.path.join(root, "labels", "det_20", f"det_{split}.json")
        lanes = os.path.join(root, "labels", "lane", "polygons", f"lane_{split}.json")
        if os.path.isfile(combined):
            self.label_files = [combined]
            records = read_labels(combined)
        elif os.path.isfile(detections):
            self.label_files = [detections]
            records = read_labels(detections)
            if os.path.isfile(lanes):
                self.label_files.append(lanes)
                for name, lane_record in read_labels(lanes, lane_file=True).items():
                    base = records.get(name, lane_record)
                    records[name] = base._replace(polys=lane_record.polys, poly_classes=lane_record.poly_classes)
        else:
            raise FileNotFoundError(f"BDD100K {split!r} labels not found: neither {combined} nor {detections}"
                                    f"{expected}")
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"BDD100K {split!r} image folder not found: {self.image_dir}{expected}")
        images = set(os.listdir(self.image_dir))
        self.frames = [record for name, record in records.items() if name in images]
        if not self.frames:
            raise ValueError(f"none of the {len(records)} frames of {', '.join(self.label_files)} has its image "
                             f"in {self.image_dir}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[files.check_index(repr(self), index, len(self))]
        original = files.read_png(os.path.join(self.image_dir, frame.name), rgb=True)
        h, w = original.shape[:2]
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        resized = np.asarray(Image.fromarray(original).resize(size, Image.BILINEAR))
        top, left = (size[1] - self.height) // 2, (size[0] - self.width) // 2
        factor, offset = np.array([size[0] / w, size[1] / h]), np.array([left, top])

        boxes = frame.boxes * np.tile(factor, 2) - np.tile(offset, 2)
        boxes = np.clip(boxes, 0, [self.width, self.height, self.width, self.height]).astype(np.float32)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

        sampled = [lane_geometry.sample_poly2d(vertices, types, self.lane_step) for vertices, types in frame.polys]
        lanes, lane_classes = [], []
        for lane, lane_class in zip(*lane_geometry.deduplicate_lanes(sampled, frame.poly_classes,
                                                                     self.dedup_threshold)):
            part = _longest_inside_part(lane * factor - offset, self.height, self.width)
            if len(part) >= 2:
                lanes.append(lane_geometry.resample_polyline(part, self.lane_points))
                lane_classes.append(lane_class)
        return {"image": _crop(resized, top, left, self.height, self.width),
                "boxes": boxes[keep], "box_classes": frame.box_classes[keep], "box_occluded": frame.box_occluded[keep],
                "lanes": np.asarray(lanes, np.float32).reshape(-1, self.lane_points, 2),
                "lane_classes": np.asarray(lane_classes, np.int32),
                "weather": np.int32(frame.weather), "scene": np.int32(frame.scene),
                "time_of_day": np.int32(frame.time_of_day)}

    def __repr__(self) -> str:
        return (f"BDD100K(root={self.root!r}, split={self.split!r}, {len(self.frames)} frames, "
                f"{self.height}x{self.width} at scale {self.scale})")
