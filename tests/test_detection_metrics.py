"""CERBERUS evaluation metrics (seed 000, section 3.4.3): AP against pycocotools, the rest against hand values."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from jaxvision import detection_metrics as dm

# ------------------------------------------------------------------------------------------- helpers


def _det(boxes, scores, classes, occluded=None):
    out = {
        "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
        "scores": np.asarray(scores, np.float64),
        "classes": np.asarray(classes, np.int64),
    }
    if occluded is not None:
        out["occluded"] = np.asarray(occluded, np.float64)
    return out


def _gt(boxes, classes, occluded=None):
    out = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "classes": np.asarray(classes, np.int64)}
    if occluded is not None:
        out["occluded"] = np.asarray(occluded, bool)
    return out


def _xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _coco_ap(detections, ground_truths, num_classes, iou_threshold=0.5, score_threshold=0.25, max_detections=100):
    """Per-class AP from pycocotools (category id = class + 1, image id = index + 1)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = []
    for i, gt in enumerate(ground_truths):
        for box, cls in zip(gt["boxes"], gt["classes"]):
            bbox = _xywh(box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1, "bbox": bbox,
                "area": bbox[2] * bbox[3], "iscrowd": 0,
            })
    dataset = {
        "images": [{"id": i + 1} for i in range(len(ground_truths))],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
    }
    results = [
        {"image_id": i + 1, "category_id": int(cls) + 1, "bbox": _xywh(box), "score": float(score)}
        for i, det in enumerate(detections)
        for box, score, cls in zip(det["boxes"], det["scores"], det["classes"])
        if score >= score_threshold
    ]
    assert results, "pycocotools' loadRes needs at least one detection"
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.iouThrs = np.array([iou_threshold])
        evaluator.params.maxDets = [max_detections]
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # [101 recall points, K]
    ap = np.array([precision[:, k][precision[:, k] > -1].mean() if (precision[:, k] > -1).any() else math.nan
                   for k in range(num_classes)])
    return ap


def _random_box(rng, integer):
    x1, y1 = rng.uniform(0, 200, 2)
    w, h = rng.uniform(4, 60, 2)
    box = np.array([x1, y1, x1 + w, y1 + h])
    return np.round(box) if integer else box


def _jitter(rng, box, integer, scale=0.3):
    """A box near `box`: IoU with it spread around 0.5 (shift and rescale by up to `scale` of its size)."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx = (box[0] + box[2]) / 2 + rng.uniform(-scale, scale) * w
    cy = (box[1] + box[3]) / 2 + rng.uniform(-scale, scale) * h
    w, h = w * rng.uniform(1 - scale, 1 + scale), h * rng.uniform(1 - scale, 1 + scale)
    out = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.round(out) if integer else out


def _random_dataset(seed, num_images=20):
    """Random GT / detections over 4 classes: class 2 has GT but no detection, class 3 detections but no GT.

    Boxes include near-duplicate GTs and jittered detections (IoU around 0.5); scores are rounded to 0.01
    (ties, some below 0.25); integer coordinates on even seeds (exact IoU ties and IoU == 0.5 happen).
    """
    rng = np.random.default_rng(seed)
    integer = seed % 2 == 0
    detections, ground_truths = [], []
    for i in range(num_images):
        gt_boxes, gt_classes = [], []
        for _ in range(0 if i in (3, 11) else rng.integers(0, 7)):
            gt_boxes.append(_random_box(rng, integer))
            gt_classes.append(rng.integers(0, 3))
            if rng.uniform() < 0.3:  # an overlapping GT of the same class
                gt_boxes.append(_jitter(rng, gt_boxes[-1], integer, 0.25))
                gt_classes.append(gt_classes[-1])
        det_boxes, det_classes = [], []
        if i not in (5, 11):
            for box, cls in zip(gt_boxes, gt_classes):
                for _ in range(rng.choice([0, 1, 1, 2, 3])):
                    det_boxes.append(_jitter(rng, box, integer))
                    wrong = rng.uniform() < 0.1
                    det_classes.append(3 if cls == 2 else (rng.integers(0, 2) if wrong else cls))
                    if rng.uniform() < 0.15:  # an exact duplicate detection
                        det_boxes.append(det_boxes[-1].copy())
                        det_classes.append(det_classes[-1])
            for _ in range(rng.integers(0, 4)):  # false positives anywhere
                det_boxes.append(_random_box(rng, integer))
                det_classes.append(rng.choice([0, 1, 3]))
        scores = np.round(rng.uniform(0, 1, len(det_boxes)), 2)
        detections.append(_det(det_boxes, scores, det_classes))
        ground_truths.append(_gt(gt_boxes, gt_classes))
    return detections, ground_truths


# -------------------------------------------------------------------------------------------- box_iou


def test_box_iou_by_hand():
    a = [[0, 0, 10, 10], [0, 0, 0, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 10]]
    expected = [[50 / 150, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]  # the zero-area box overlaps nothing
    np.testing.assert_allclose(dm.box_iou(a, b), expected)
    assert dm.box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    assert dm.box_iou(a, []).shape == (2, 0)


def test_box_iou_rejects_bad_shape():
    with pytest.raises(ValueError, match="b must have shape"):
        dm.box_iou([[0, 0, 1, 1]], [[0, 0, 1]])


# --------------------------------------------------------------------------------- AP against pycocotools


@pytest.mark.parametrize("seed", range(8))
def test_average_precision_matches_pycocotools(seed):
    detections, ground_truths = _random_dataset(seed)
    ours = dm.average_precision(detections, ground_truths, num_classes=4)
    coco = _coco_ap(detections, ground_truths, num_classes=4)
    assert np.isnan(ours["ap"][3]) and ours["ap"][2] == 0.0
    assert 0.0 < ours["ap"][0] < 1.0 and 0.0 < ours["ap"][1] < 1.0
    np.testing.assert_allclose(ours["ap"], coco, rtol=0, atol=1e-6, equal_nan=True)
    assert ours["map"] == pytest.approx(np.nanmean(coco), abs=1e-6)


@pytest.mark.parametrize(
    ("seed", "kwargs"),
    [
        (10, {"iou_threshold": 0.3}),
        (11, {"iou_threshold": 0.75}),
        (12, {"max_detections": 2}),
        (13, {"score_threshold": 0.0}),
        (14, {"iou_threshold": 1.0, "score_threshold": 0.5}),
    ],
)
def test_average_precision_matches_pycocotools_other_settings(seed, kwargs):
    detections, ground_truths = _random_dataset(seed)
    ours = dm.average_precision(detections, ground_truths, num_classes=4, **kwargs)
    coco = _coco_ap(detections, ground_truths, num_classes=4, **kwargs)
    np.testing.assert_allclose(ours["ap"], coco, rtol=0, atol=1e-6, equal_nan=True)


def test_average_precision_iou_tie_goes_to_the_later_gt_like_pycocotools():
    """The first detection has IoU 0.6 with both GTs; COCO matches the later one, so the second gets the first."""
    detections = [_det([[0, 0, 10, 10], [0, 0, 10, 6]], [0.9, 0.8], [0, 0])]
    ground_truths = [_gt([[0, 0, 10, 6], [0, 4, 10, 10]], [0, 0])]
    ours = dm.average_precision(detections, ground_truths, num_classes=1)
    assert ours["ap"][0] == pytest.approx(1.0)
    np.testing.assert_allclose(ours["ap"], _coco_ap(detections, ground_truths, 1), atol=1e-6)


def test_average_precision_threshold_one_is_capped_like_pycocotools():
    """COCO matches at min(t, 1 - 1e-10): at t = 1 a box off by 1e-12 (IoU 1 - 1e-13) still matches."""
    detections = [_det([[0, 0, 10, 10 + 1e-12], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])]
    ground_truths = [_gt([[0, 0, 10, 10], [20, 20, 30, 31]], [0, 0])]
    ours = dm.average_precision(detections, ground_truths, num_classes=1, iou_threshold=1.0)
    assert ours["ap"][0] == pytest.approx(51 / 101)
    np.testing.assert_allclose(ours["ap"], _coco_ap(detections, ground_truths, 1, iou_threshold=1.0), atol=1e-6)


# ------------------------------------------------------------------------------------------- AP by hand


def test_average_precision_perfect_detection():
    result = dm.average_precision([_det([[0, 0, 10, 10]], [0.9], [0])], [_gt([[0, 0, 10, 10]], [0])], 1)
    assert result["ap"][0] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)


def test_average_precision_drops_detections_below_score_threshold():
    ground_truths = [_gt([[0, 0, 10, 10]], [0])]
    low = [_det([[0, 0, 10, 10]], [0.2], [0])]
    assert dm.average_precision(low, ground_truths, 1)["ap"][0] == 0.0
    assert dm.average_precision(low, ground_truths, 1, score_threshold=0.1)["ap"][0] == pytest.approx(1.0)
    at_threshold = [_det([[0, 0, 10, 10]], [0.25], [0])]
    assert dm.average_precision(at_threshold, ground_truths, 1)["ap"][0] == pytest.approx(1.0)


def test_average_precision_two_gts_one_detected():
    """Recall 0.5 at precision 1: recall points 0, 0.01, ..., 0.5 (51 of 101) get 1, the rest 0."""
    result = dm.average_precision(
        [_det([[0, 0, 10, 10]], [0.9], [0])], [_gt([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0])], 1
    )
    assert result["ap"][0] == pytest.approx(51 / 101)
    assert result["ap"][0] == pytest.approx(0.50495, abs=1e-5)


def test_average_precision_false_positive_ranked_first():
    """FP (0.9) then TP (0.8): precision 0.5 at recall 1 everywhere -> AP 0.5; with max_detections=1 -> 0."""
    detections = [_det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    ground_truths = [_gt([[0, 0, 10, 10]], [0])]
    assert dm.average_precision(detections, ground_truths, 1)["ap"][0] == pytest.approx(0.5)
    assert dm.average_precision(detections, ground_truths, 1, max_detections=1)["ap"][0] == 0.0


def test_average_precision_iou_threshold_inclusive():
    """IoU exactly 0.5 is a match (COCO skips only IoU < threshold)."""
    detections = [_det([[0, 0, 10, 10]], [0.9], [0])]
    ground_truths = [_gt([[0, 0, 10, 5]], [0])]
    assert dm.average_precision(detections, ground_truths, 1)["ap"][0] == pytest.approx(1.0)
    assert dm.average_precision(detections, ground_truths, 1, iou_threshold=0.51)["ap"][0] == 0.0


def test_average_precision_classes_without_gt_are_nan():
    result = dm.average_precision(
        [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.9], [0, 2])], [_gt([[0, 0, 10, 10]], [0])], 3
    )
    assert result["ap"][0] == pytest.approx(1.0) and np.isnan(result["ap"][1:]).all()
    assert result["map"] == pytest.approx(1.0)
    empty = dm.average_precision([_det([[0, 0, 1, 1]], [0.9], [0])], [_gt([], [])], 2)
    assert np.isnan(empty["ap"]).all() and math.isnan(empty["map"])


def test_average_precision_rejects_bad_input():
    good_det, good_gt = _det([[0, 0, 1, 1]], [0.9], [0]), _gt([[0, 0, 1, 1]], [0])
    with pytest.raises(ValueError, match="one entry per image"):
        dm.average_precision([good_det], [good_gt, good_gt], 1)
    with pytest.raises(ValueError, match=r"detections\[0\]\['scores'\]"):
        dm.average_precision([_det([[0, 0, 1, 1]], [0.9, 0.8], [0])], [good_gt], 1)
    with pytest.raises(ValueError, match=r"ground_truths\[0\]\['boxes'\]"):
        dm.average_precision([good_det], [{"boxes": np.zeros((1, 5)), "classes": [0]}], 1)
    with pytest.raises(ValueError, match=r"detections\[0\]\['classes'\]"):
        dm.average_precision([_det([[0, 0, 1, 1]], [0.9], [1])], [good_gt], 1)


# ------------------------------------------------------------------------------------------- occlusion


def test_occlusion_accuracy_hand_built():
    """Image 1: the Hungarian pairs (d0-G1, d1-G0) beat greedy (d0-G0 leaves d1 at IoU 0.27): 2 of 2 right.
    Image 2: a wrong-class and a below-threshold detection are not matched; one pair wrong (0.6 -> occluded),
    one right (0.5 is not > 0.5): 3 of 4 overall."""
    image1 = (
        _det([[1, 0, 12.5, 10], [0, 0, 9, 10]], [0.9, 0.8], [0, 0], occluded=[0.2, 0.9]),
        _gt([[0, 0, 10, 10], [5, 0, 15, 10]], [0, 0], occluded=[True, False]),
    )
    image2 = (
        _det(
            [[0, 0, 10, 10], [100, 100, 120, 120], [50, 50, 60, 60], [200, 0, 210, 10]],
            [0.9, 0.9, 0.1, 0.9],
            [1, 0, 0, 1],
            occluded=[0.6, 0.5, 0.0, 0.9],
        ),
        _gt(
            [[0, 0, 10, 10], [101, 100, 120, 120], [50, 50, 60, 60], [200, 0, 210, 10]],
            [1, 0, 0, 0],
            occluded=[False, False, True, False],
        ),
    )
    pairs = dm._hungarian_pairs(image1[0], image1[1], 0.5)
    assert sorted(zip(*pairs)) == [(0, 1), (1, 0)]
    accuracy = dm.occlusion_accuracy([image1[0], image2[0]], [image1[1], image2[1]])
    assert accuracy == pytest.approx(3 / 4)


def test_occlusion_accuracy_nan_without_matches():
    detections = [_det([[0, 0, 10, 10]], [0.9], [0], occluded=[0.9]), _det([], [], [], occluded=[])]
    ground_truths = [_gt([[50, 50, 60, 60]], [0], occluded=[True]), _gt([[0, 0, 1, 1]], [0], occluded=[True])]
    assert math.isnan(dm.occlusion_accuracy(detections, ground_truths))


def test_occlusion_accuracy_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"detections\[0\]\['occluded'\]"):
        dm.occlusion_accuracy(
            [_det([[0, 0, 1, 1]], [0.9], [0], occluded=[0.1, 0.2])], [_gt([[0, 0, 1, 1]], [0], occluded=[True])]
        )


# ---------------------------------------------------------------------------------------------- lanes


def _horizontal(y, x0=-50, x1=100):
    return np.array([[x0, y], [x1, y]], np.float64)


def test_rasterize_lanes_basics():
    mask = dm.rasterize_lanes([_horizontal(10.4)], 20, 30, thickness=1)
    assert mask.dtype == bool and mask.shape == (20, 30)
    assert np.array_equal(np.nonzero(mask.any(1))[0], [10]) and mask.sum() == 30  # rounded, clipped to the image
    assert dm.rasterize_lanes([np.array([[5.0, 5.0]])], 20, 30, thickness=1).sum() == 1  # a single point: a dot
    assert dm.rasterize_lanes([_horizontal(-40), np.zeros((0, 2))], 20, 30, thickness=1).sum() == 0
    chain = dm.rasterize_lanes([np.array([[0, 0], [9, 0], [9, 9]])], 20, 30, thickness=1)  # an L: 10 + 9 pixels
    assert chain.sum() == 19 and chain[0, :10].all() and chain[:10, 9].all()


def test_rasterize_lanes_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"polylines\[1\]"):
        dm.rasterize_lanes([_horizontal(3), np.zeros((3, 3))], 20, 30, thickness=1)


def test_lane_iou_identical_and_disjoint():
    metric = dm.LaneIoU(20, 30, thickness=3)
    metric.add([_horizontal(5), _horizontal(15)], [_horizontal(5), _horizontal(15)])
    assert metric.result() == 1.0
    metric = dm.LaneIoU(40, 30, thickness=3)
    metric.add([_horizontal(5)], [_horizontal(30)])
    assert metric.result() == 0.0
    assert math.isnan(dm.LaneIoU(20, 30).result())


def test_lane_iou_partial_overlap_by_hand():
    # thickness 1: two 20-pixel segments on one row sharing 10 pixels -> 10 / 30
    metric = dm.LaneIoU(20, 30, thickness=1)
    metric.add([np.array([[0, 5], [19, 5]])], [np.array([[10, 5], [29, 5]])])
    assert metric.result() == pytest.approx(1 / 3)
    # cv2 draws a horizontal line of thickness 3 five rows high (y - 2 .. y + 2): rows 8-12 vs 10-14 -> 3 / 7
    assert np.array_equal(np.nonzero(dm.rasterize_lanes([_horizontal(10)], 20, 30, 3).any(1))[0], range(8, 13))
    metric = dm.LaneIoU(20, 30, thickness=3)
    metric.add([_horizontal(10)], [_horizontal(12)])
    assert metric.result() == pytest.approx(3 / 7)
    # totals over images, not the mean of per-image IoUs: (90 + 150) / (210 + 150)
    metric.add([_horizontal(5)], [_horizontal(5)])
    assert metric.result() == pytest.approx((90 + 150) / (210 + 150))


# ---------------------------------------------------------------------------------------------- scene


def test_f1_scores_by_hand():
    """Class 0: TP 1 FP 1 FN 1 -> 0.5; class 1: TP 2 FP 1 -> 0.8; class 2: FN 1 -> 0; class 3 absent."""
    result = dm.f1_scores(predicted=[0, 1, 1, 1, 0], true=[0, 0, 1, 1, 2], num_classes=4)
    assert result["micro"] == pytest.approx(3 / 5)
    assert result["macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_f1_scores_random_against_direct_computation():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 200)
    predicted = np.where(rng.uniform(size=200) < 0.6, true, rng.integers(0, 6, 200))
    result = dm.f1_scores(predicted, true, num_classes=7)
    assert result["micro"] == pytest.approx(np.mean(predicted == true))
    per_class = []
    for c in range(7):
        tp = np.sum((predicted == c) & (true == c))
        fp = np.sum((predicted == c) & (true != c))
        fn = np.sum((predicted != c) & (true == c))
        if tp + fp + fn:
            per_class.append(2 * tp / (2 * tp + fp + fn))
    assert len(per_class) == 6
    assert result["macro"] == pytest.approx(np.mean(per_class))


def test_f1_scores_edge_cases():
    assert dm.f1_scores([2, 2], [2, 2], 3) == {"micro": 1.0, "macro": 1.0}
    empty = dm.f1_scores([], [], 3)
    assert math.isnan(empty["micro"]) and math.isnan(empty["macro"])
    with pytest.raises(ValueError, match="predicted must have shape"):
        dm.f1_scores([0, 1], [0, 1, 2], 3)
    with pytest.raises(ValueError, match="true must lie in"):
        dm.f1_scores([0, 1], [0, 3], 3)
