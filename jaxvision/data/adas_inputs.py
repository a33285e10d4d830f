"""Driving scenes -> the ADAS model's training / evaluation examples (seed 000, ch. 3).

A source example (`synthetic.render_scene`, `bdd100k.BDD100K`) holds the image, boxes with classes and occlusion
flags, lane polylines with classes and the tag indices. `adas_example` turns it into fixed-shape arrays: the
image in [0, 1], the encoded targets of jaxvision/data/adas_targets.py (heatmaps, object centres with corner
offsets and occlusion, lane keypoints with their midpoint votes), the tag labels, and the ground truth padded to
`data.adas.max_boxes` boxes and `max_lanes` lanes for the evaluation metrics.

`data.adas` fields: num_classes, num_lane_classes, tags (tag task names, keys of the source example), stride,
max_objects (encoded centres), max_lane_points (encoded lane keypoints), max_boxes / max_lanes / lane_points
(padded ground truth), det_sigma (0: size-adaptive, CornerNet's radius), lane_sigma (2, section 3.4.1),
lane_step (keypoint spacing along a lane, output cells).
"""

from __future__ import annotations

import numpy as np

from jaxvision.data import adas_targets, synthetic
from jaxvision.data.lane_geometry import resample_polyline

# Synthetic scenes label boxes with Cityscapes train ids; the detection task numbers them 0..2.
_SYNTHETIC_CLASS_INDEX = np.full(256, -1, np.int32)
_SYNTHETIC_CLASS_INDEX[list(synthetic.INSTANCE_CLASSES)] = np.arange(len(synthetic.INSTANCE_CLASSES))


def detection_classes(example: dict, source_name: str) -> np.ndarray:
    """The example's box classes as indices of the detection task."""
    classes = np.asarray(example["box_classes"], np.int32)
    return _SYNTHETIC_CLASS_INDEX[classes] if source_name == "synthetic_scenes" else classes


def _pad(array: np.ndarray, size: int, fill=0) -> np.ndarray:
    """First `size` rows of `array`, padded with `fill` to exactly `size` rows."""
    out = np.full((size, *array.shape[1:]), fill, array.dtype)
    out[:min(size, len(array))] = array[:size]
    return out


def adas_example(example: dict, adas_config, source_name: str) -> dict:
    """Model-ready arrays of one scene (see the module docstring)."""
    height, width = example["image"].shape[:2]
    stride = adas_config.stride
    out_size = (height // stride, width // stride)
    classes = detection_classes(example, source_name)
    boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
    occluded = np.asarray(example["box_occluded"], bool)
    lanes = [np.asarray(lane, np.float32) for lane in example["lanes"]]
    lane_classes = np.asarray(example["lane_classes"], np.int32)
    detections = adas_targets.encode_detections(
        boxes, classes, occluded, adas_config.num_classes, out_size, stride, adas_config.max_objects,
        sigma=adas_config.det_sigma or None)
    lane_targets = adas_targets.encode_lanes(
        lanes, lane_classes, adas_config.num_lane_classes, out_size, stride, adas_config.max_lane_points,
        sigma=adas_config.lane_sigma, step=adas_config.lane_step)
    points = adas_config.lane_points
    gt_lanes = np.stack([resample_polyline(lane, points) for lane in lanes]) if lanes else np.zeros((0, points, 2))
    return {"image": example["image"].astype(np.float32) * np.float32(1 / 255),
            **detections, **lane_targets,
            **{tag: np.int32(example[tag]) for tag in adas_config.tags},
            "gt_boxes": _pad(boxes, adas_config.max_boxes), "gt_classes": _pad(classes, adas_config.max_boxes),
            "gt_occluded": _pad(occluded, adas_config.max_boxes),
            "gt_box_mask": _pad(np.ones(len(boxes), np.float32), adas_config.max_boxes),
            "gt_lanes": _pad(gt_lanes.astype(np.float32), adas_config.max_lanes),
            "gt_lane_classes": _pad(lane_classes, adas_config.max_lanes),
            "gt_lane_mask": _pad(np.ones(len(lanes), np.float32), adas_config.max_lanes)}


def padding_example(adas_config, height: int, width: int) -> dict:
    """An all-empty example of the same shapes (eval padding; the pipeline adds 'mask' 0)."""
    empty = {"image": np.zeros((height, width, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
             "box_classes": np.zeros(0, np.int32), "box_occluded": np.zeros(0, bool),
             "lanes": np.zeros((0, 2, 2), np.float32), "lane_classes": np.zeros(0, np.int32),
             **{tag: np.int32(0) for tag in adas_config.tags}}
    return adas_example(empty, adas_config, "")
