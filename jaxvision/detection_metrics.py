"""Evaluation metrics of the CERBERUS multi-task ADAS model (seed 000, section 3.4.3, "Performance evaluation").

All numpy (plus scipy and cv2), run on host after the model's outputs are decoded.

* Object detection, `average_precision`: AP per class at one IoU threshold (mAP@0.5 in the thesis) after
  dropping detections with a score below 0.25. It reproduces pycocotools' bbox AP (`COCOeval(..., 'bbox')`,
  `iouThrs=[t]`, area range 'all', `maxDets=[max_detections]`, no crowd boxes): per image and class the
  detections, sorted by score, are matched greedily to the unmatched ground truth of highest IoU >= t; the
  precision-recall curve of all images is made monotone and sampled at the 101 recall points 0, 0.01, ..., 1.
  Boxes are (x1, y1, x2, y2) pixels (COCO itself reads (x, y, w, h)); `box_iou` uses COCO's area w * h.
* Occlusion, `occlusion_accuracy`: detections and ground truths of one image are paired by the Hungarian
  algorithm on 1 - IoU (same class only); the pairs with IoU >= threshold are the true positives, and the
  metric is the accuracy of the thresholded occlusion probability (> 0.5) against the ground-truth flag.
* Lanes, `LaneIoU`: predicted and ground-truth lanes are drawn as polygonal chains into one binary mask per
  image (`rasterize_lanes`, class-agnostic); the metric is the total intersection over the total union.
* Scene classification (weather, scene, time of day), `f1_scores`: micro F1 (TP, FP, FN pooled over the
  classes, as the thesis defines it) and macro F1 (mean of the per-class F1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_FORBIDDEN_COST = 1e6


# ----------------------------------------------------------------------------------------------- boxes


def _as_boxes(boxes, name: str) -> np.ndarray:
    """`boxes` as float64 [N, 4]; ValueError naming `name` otherwise."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {boxes.shape}")
    return boxes


def box_iou(a, b) -> np.ndarray:
    """IoU of boxes a [N, 4] and b [M, 4] in (x1, y1, x2, y2) -> [N, M] (COCO: area w * h, 0 where no overlap)."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    valid = (w > 0) & (h > 0) & (union > 0)
    return np.divide(inter, union, out=np.zeros_like(inter), where=valid)


# ------------------------------------------------------------------------------------------ inputs


def _vector(values, n: int, name: str, dtype) -> np.ndarray:
    """`values` as a [n] array of `dtype`; ValueError naming `name` otherwise."""
    values = np.asarray(values, dtype=dtype)
    if values.size == 0:
        values = values.reshape(0)
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}], got {values.shape}")
    return values


def _classes(values, n: int, name: str, num_classes: int | None = None) -> np.ndarray:
    """Integer class ids [n], checked against [0, num_classes) when given."""
    values = _vector(values, n, name, np.float64)
    if np.any(values != np.round(values)):
        raise ValueError(f"{name} must hold integer class ids")
    values = values.astype(np.int64)
    if num_classes is not None and np.any((values < 0) | (values >= num_classes)):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got {values.min()}..{values.max()}")
    return values


def _detection(det: dict, i: int, num_classes: int | None, occluded: bool = False) -> dict:
    """Checked arrays of image `i`'s detections."""
    boxes = _as_boxes(det["boxes"], f"detections[{i}]['boxes']")
    n = len(boxes)
    out = {"boxes": boxes, "scores": _vector(det["scores"], n, f"detections[{i}]['scores']", np.float64)}
    out["classes"] = _classes(det["classes"], n, f"detections[{i}]['classes']", num_classes)
    if occluded:
        out["occluded"] = _vector(det["occluded"], n, f"detections[{i}]['occluded']", np.float64)
    return out


def _ground_truth(gt: dict, i: int, num_classes: int | None, occluded: bool = False) -> dict:
    """Checked arrays of image `i`'s ground truths."""
    boxes = _as_boxes(gt["boxes"], f"ground_truths[{i}]['boxes']")
    m = len(boxes)
    out = {"boxes": boxes, "classes": _classes(gt["classes"], m, f"ground_truths[{i}]['classes']", num_classes)}
    if occluded:
        out["occluded"] = _vector(gt["occluded"], m, f"ground_truths[{i}]['occluded']", bool)
    return out


def _check_lists(detections: Sequence[dict], ground_truths: Sequence[dict]) -> None:
    """One detection dict and one ground-truth dict per image."""
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"detections and ground_truths must have one entry per image, got {len(detections)} and "
            f"{len(ground_truths)}"
        )


def _keep(arrays: dict, mask: np.ndarray) -> dict:
    """Every array of `arrays` restricted to `mask`."""
    return {k: v[mask] for k, v in arrays.items()}


# -------------------------------------------------------------------------------- average precision


def _match_image(det_boxes, gt_boxes, iou_threshold: float) -> np.ndarray:
    """COCO greedy matching of score-sorted detections: bool [n], True where a ground truth was matched."""
    matched = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return matched
    ious = box_iou(det_boxes, gt_boxes)
    gt_taken = np.zeros(len(gt_boxes), dtype=bool)
    threshold = min(iou_threshold, 1 - 1e-10)
    for d in range(len(det_boxes)):
        best, m = threshold, -1
        for g in range(len(gt_boxes)):
            # COCO's loop: a later ground truth of equal IoU replaces the earlier one
            if gt_taken[g] or ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m >= 0:
            gt_taken[m] = matched[d] = True
    return matched


def _interpolated_precision(tp: np.ndarray, num_gt: int) -> np.ndarray:
    """101-point precision of score-sorted TP flags (COCO's `accumulate`) -> [101]."""
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(~tp).astype(np.float64)
    recall = tp_sum / num_gt
    precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    out = np.zeros(len(RECALL_POINTS))
    reached = idx < len(precision)
    out[reached] = precision[idx[reached]]  # recall points beyond the last reached recall stay 0
    return out


def _class_ap(per_image: list[tuple[np.ndarray, np.ndarray]], num_gt: int) -> float:
    """AP of one class from per-image (sorted scores, TP flags); nan without ground truth."""
    if num_gt == 0:
        return math.nan
    scores = np.concatenate([s for s, _ in per_image]) if per_image else np.zeros(0)
    tp = np.concatenate([t for _, t in per_image]) if per_image else np.zeros(0, bool)
    order = np.argsort(-scores, kind="mergesort")
    return float(np.mean(_interpolated_precision(tp[order], num_gt)))


def average_precision(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
    max_detections: int = 100,
) -> dict:
    """COCO bbox AP at one IoU threshold (101-point) per class; {'ap': [num_classes] (nan: no GT), 'map'}.

    `detections[i]`: {'boxes' [n, 4] xyxy, 'scores' [n], 'classes' [n]}; `ground_truths[i]`: {'boxes' [m, 4],
    'classes' [m]}. Detections with score < `score_threshold` are dropped first; then at most
    `max_detections` per image and class, by descending score, are kept.
    """
    _check_lists(detections, ground_truths)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    per_class = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, dtype=np.int64)
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        det, gt = _detection(det, i, num_classes), _ground_truth(gt, i, num_classes)
        det = _keep(det, det["scores"] >= score_threshold)
        for k in range(num_classes):
            gt_boxes = gt["boxes"][gt["classes"] == k]
            num_gt[k] += len(gt_boxes)
            d = _keep(det, det["classes"] == k)
            order = np.argsort(-d["scores"], kind="mergesort")[:max_detections]
            tp = _match_image(d["boxes"][order], gt_boxes, iou_threshold)
            per_class[k].append((d["scores"][order], tp))
    ap = np.array([_class_ap(per_class[k], int(num_gt[k])) for k in range(num_classes)], dtype=np.float64)
    valid = ~np.isnan(ap)
    return {"ap": ap, "map": float(ap[valid].mean()) if valid.any() else math.nan}


# ------------------------------------------------------------------------------------------ occlusion


def _hungarian_pairs(det: dict, gt: dict, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching on 1 - IoU (other class forbidden); the pairs of same class and IoU >= threshold."""
    if len(det["boxes"]) == 0 or len(gt["boxes"]) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ious = box_iou(det["boxes"], gt["boxes"])
    same_class = det["classes"][:, None] == gt["classes"][None, :]
    rows, cols = linear_sum_assignment(np.where(same_class, 1.0 - ious, _FORBIDDEN_COST))
    keep = same_class[rows, cols] & (ious[rows, cols] >= iou_threshold)
    return rows[keep], cols[keep]


def occlusion_accuracy(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> float:
    """Accuracy of (occlusion probability > 0.5) == GT occluded over the Hungarian-matched pairs; nan if none.

    Detections also carry 'occluded' (probability [n]), ground truths 'occluded' (bool [m]).
    """
    _check_lists(detections, ground_truths)
    correct = total = 0
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        det = _detection(det, i, None, occluded=True)
        gt = _ground_truth(gt, i, None, occluded=True)
        det = _keep(det, det["scores"] >= score_threshold)
        rows, cols = _hungarian_pairs(det, gt, iou_threshold)
        correct += int(np.sum((det["occluded"][rows] > 0.5) == gt["occluded"][cols]))
        total += len(rows)
    return correct / total if total else math.nan


# ---------------------------------------------------------------------------------------------- lanes


def _polyline_points(points, name: str) -> np.ndarray:
    """A polyline [P, 2] of finite (x, y) as rounded int32 points for cv2."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.int32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape [P, 2], got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must hold finite coordinates")
    return np.rint(points).astype(np.int32)


def rasterize_lanes(polylines: Sequence, height: int, width: int, thickness: int) -> np.ndarray:
    """Binary mask bool [H, W] of the polylines ([P, 2] (x, y) pixels each) drawn as polygonal chains.

    cv2.polylines, 8-connected (no anti-aliasing), coordinates rounded, `thickness` as cv2 reads it; parts
    outside the image are clipped; a single point is drawn as a dot of that thickness.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    if not 1 <= thickness <= 32767:
        raise ValueError(f"thickness must be in [1, 32767], got {thickness}")
    mask = np.zeros((height, width), np.uint8)
    chains = []
    for j, line in enumerate(polylines):
        points = _polyline_points(line, f"polylines[{j}]")
        if len(points) == 1:  # cv2 draws nothing for a one-point chain
            points = np.repeat(points, 2, axis=0)
        if len(points):
            chains.append(points.reshape(-1, 1, 2))
    if chains:
        cv2.polylines(mask, chains, isClosed=False, color=1, thickness=int(thickness), lineType=cv2.LINE_8)
    return mask.astype(bool)


class LaneIoU:
    """Class-agnostic lane IoU: total intersection / total union of the rasterized masks over all images."""

    def __init__(self, height: int, width: int, thickness: int = 8):
        self.height, self.width, self.thickness = height, width, thickness
        self.intersection = 0
        self.union = 0

    def add(self, pred_polylines: Sequence, gt_polylines: Sequence) -> None:
        """Accumulate one image's predicted and ground-truth lanes (lists of [P, 2] arrays)."""
        pred = rasterize_lanes(pred_polylines, self.height, self.width, self.thickness)
        gt = rasterize_lanes(gt_polylines, self.height, self.width, self.thickness)
        self.intersection += int(np.count_nonzero(pred & gt))
        self.union += int(np.count_nonzero(pred | gt))

    def result(self) -> float:
        """Total intersection over total union; nan when the union is empty."""
        return self.intersection / self.union if self.union else math.nan


# ---------------------------------------------------------------------------------------------- scene


def f1_scores(predicted, true, num_classes: int) -> dict:
    """Micro and macro F1 of single-label multi-class predictions (int [N]) -> {'micro', 'macro'}.

    Micro: 2 TP / (2 TP + FP + FN) with TP, FP, FN summed over the classes (the thesis' definition); for
    single-label data every error is one FP and one FN, so it equals the accuracy. Macro: the mean of the
    per-class F1 over the classes occurring in `true` or `predicted`. Both nan for empty inputs.
    """
    true = _classes(true, np.size(true), "true", num_classes)
    predicted = _classes(predicted, len(true), "predicted", num_classes)
    if len(true) == 0:
        return {"micro": math.nan, "macro": math.nan}
    tp = np.bincount(true[predicted == true], minlength=num_classes).astype(np.float64)
    fp = np.bincount(predicted, minlength=num_classes) - tp
    fn = np.bincount(true, minlength=num_classes) - tp
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    present = (tp + fp + fn) > 0
    macro = np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present]))
    return {"micro": float(micro), "macro": float(macro)}
