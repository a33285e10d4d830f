"""Training targets of the ADAS multi-task model (seed 000, section 3.3.1; numpy, one example at a time).

Output space: stride S, maps h x w = H // S x W // S; a pixel coordinate p is p / S there and output cell
(row i, column j) sits at (x = j, y = i). Centres and keypoints are rounded half up (floor(v + 0.5)).

Detection (Eq. 3.1, 3.2):
  centre c = (round((x1 + x2) / 2S), round((y1 + y2) / 2S)), clipped into the map (the printed
  (x2 - x1) / 2S is a typo for the box centre);
  H_D^k(x, y) = max_j exp(-((x - cx_j)^2 + (y - cy_j)^2) / sigma_j^2) over the objects j of class k. The
  thesis divides by sigma^2, not 2 sigma^2: with CenterNet's sigma = (2r + 1) / 6 this is a narrower peak;
  each Gaussian is drawn in a window of radius ceil(3 sigma) (beyond it the value is < e^-9);
  offsets at the integer centre (Eq. 3.2): (cx - x1/S, cy - y1/S, cx - x2/S, cy - y2/S), output units.
Lanes (Eq. 3.1 with a fixed sigma, Eq. 3.4):
  each polyline is sampled every `step` output cells of arc length and rounded to cells (its keypoints
  L_i); every keypoint gets a Gaussian in its class' heatmap and the vote (xm - x, ym - y) towards the lane's
  midpoint L_i[|L_i| // 2].
"""

from __future__ import annotations

import math

import numpy as np

MIN_SIGMA = 0.5  # floor on the size-adaptive sigma: CenterNet's r = 0 would give 1/6, a one-cell spike


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius for a box of `height` x `width` (output units): the smallest of its three cases.

    Each case is a quadratic a r^2 - b r + c = 0 (corners both inside / both outside / one of each by r, IoU
    = min_overlap) and, as in the released CornerNet / CenterNet code, its root is taken as
    (b + sqrt(b^2 - 4ac)) / 2 (not / 2a): this is the radius those models, and the thesis' [95], train with.
    """
    h, w, t = float(height), float(width), float(min_overlap)
    b1, c1 = h + w, w * h * (1 - t) / (1 + t)                      # a1 = 1
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4 * c1, 0.0))) / 2
    a2, b2, c2 = 4.0, 2 * (h + w), (1 - t) * w * h
    r2 = (b2 + math.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * t, -2 * t * (h + w), (t - 1) * w * h
    r3 = (b3 + math.sqrt(max(b3 * b3 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def adaptive_sigma(height: float, width: float, min_overlap: float = 0.7, min_sigma: float = MIN_SIGMA) -> float:
    """CenterNet's sigma: r = max(0, floor(gaussian_radius)), sigma = (2r + 1) / 6, at least `min_sigma`."""
    r = max(0, int(gaussian_radius(height, width, min_overlap)))
    return max((2 * r + 1) / 6.0, float(min_sigma))


def gaussian(x, y, cx: float, cy: float, sigma: float):
    """Eq. 3.1 for one keypoint: exp(-((x - cx)^2 + (y - cy)^2) / sigma^2)."""
    return np.exp(-((np.asarray(x, np.float64) - cx) ** 2 + (np.asarray(y, np.float64) - cy) ** 2) / sigma ** 2)


def draw_gaussian(heat: np.ndarray, cx: int, cy: int, sigma: float) -> None:
    """heat[h, w] = max(heat, Eq. 3.1 Gaussian at the cell (cx, cy)), inside a ceil(3 sigma) window, in place."""
    h, w = heat.shape
    r = int(math.ceil(3 * sigma))
    x0, x1, y0, y1 = max(cx - r, 0), min(cx + r + 1, w), max(cy - r, 0), min(cy + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    g = np.exp(-((np.arange(y0, y1) - cy)[:, None] ** 2 + (np.arange(x0, x1) - cx)[None, :] ** 2) / sigma ** 2)
    np.maximum(heat[y0:y1, x0:x1], g.astype(heat.dtype), out=heat[y0:y1, x0:x1])


def _round(v):
    return np.floor(np.asarray(v, np.float64) + 0.5).astype(np.int64)


def encode_detections(boxes, classes, occluded, num_classes: int, out_size: tuple[int, int], stride: int = 4,
                      max_objects: int = 64, sigma: float | None = None) -> dict[str, np.ndarray]:
    """Detection targets of one image (Eq. 3.1, 3.2).

    boxes [N, 4] pixel (x1, y1, x2, y2); classes [N] in [0, num_classes); occluded [N] 0/1. Boxes with zero
    area or a class outside the range are skipped. sigma None: size-adaptive per box (`adaptive_sigma` of the
    box in output units); a float: fixed. The heatmap holds every valid box; the per-object lists hold the
    first `max_objects` of them (input order), zero-padded with det_mask 0. Two objects of one class whose
    centres fall in the same cell are both listed.

    Returns heatmap [h, w, K] float32, det_index [M, 2] int32 (row, col), det_offsets [M, 4] float32,
    det_occluded [M] float32, det_class [M] int32, det_mask [M] float32.
    """
    h, w = out_size
    s = float(stride)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    occluded = np.asarray(occluded, np.float32).reshape(-1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = np.flatnonzero((bw > 0) & (bh > 0) & (classes >= 0) & (classes < num_classes)
                          & np.all(np.isfinite(boxes), axis=1))
    boxes, classes, occluded, bw, bh = boxes[keep], classes[keep], occluded[keep], bw[keep], bh[keep]
    cx = np.clip(_round((boxes[:, 0] + boxes[:, 2]) / (2 * s)), 0, w - 1)
    cy = np.clip(_round((boxes[:, 1] + boxes[:, 3]) / (2 * s)), 0, h - 1)

    heat = np.zeros((num_classes, h, w), np.float32)  # class-major while drawing: contiguous 2-D slices
    for i in range(len(boxes)):
        sig = float(sigma) if sigma is not None else adaptive_sigma(bh[i] / s, bw[i] / s)
        draw_gaussian(heat[classes[i]], int(cx[i]), int(cy[i]), sig)

    m = min(len(boxes), max_objects)
    index = np.zeros((max_objects, 2), np.int32)
    offsets = np.zeros((max_objects, 4), np.float32)
    occ = np.zeros((max_objects,), np.float32)
    cls = np.zeros((max_objects,), np.int32)
    mask = np.zeros((max_objects,), np.float32)
    index[:m, 0], index[:m, 1] = cy[:m], cx[:m]
    b = boxes[:m] / s
    offsets[:m] = np.stack([cx[:m] - b[:, 0], cy[:m] - b[:, 1], cx[:m] - b[:, 2], cy[:m] - b[:, 3]], axis=1)
    occ[:m], cls[:m], mask[:m] = occluded[:m], classes[:m], 1.0
    return {"heatmap": np.ascontiguousarray(heat.transpose(1, 2, 0)), "det_index": index, "det_offsets": offsets,
            "det_occluded": occ, "det_class": cls, "det_mask": mask}


def lane_keypoints(polyline, stride: int, step: float = 1.0, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Keypoint cells [n, 2] int32 (x, y) of a pixel polyline [P, 2] (x, y); rows with NaN are ignored.

    The polyline is taken to output units (/ stride), sampled every `step` cells of arc length from its first
    point (plus its last point), rounded to cells; cells outside `out_size` (h, w) are dropped, then
    consecutive duplicates. The lane's midpoint (Eq. 3.4) is keypoints[len(keypoints) // 2].
    """
    p = np.asarray(polyline, np.float64).reshape(-1, 2)
    p = p[np.all(np.isfinite(p), axis=1)] / float(stride)
    if len(p) == 0:
        return np.zeros((0, 2), np.int32)
    seg = np.hypot(*np.diff(p, axis=0).T) if len(p) > 1 else np.zeros(0)
    p = np.concatenate([p[:1], p[1:][seg > 0]])          # drop repeated vertices: arc length strictly grows
    arc = np.concatenate([[0.0], np.cumsum(seg[seg > 0])])
    t = np.arange(0.0, arc[-1], step) if arc[-1] > 0 else np.zeros(1)
    t = np.append(t, arc[-1]) if arc[-1] > 0 else t
    cells = _round(np.stack([np.interp(t, arc, p[:, 0]), np.interp(t, arc, p[:, 1])], axis=1))
    if out_size is not None:
        h, w = out_size
        cells = cells[(cells[:, 0] >= 0) & (cells[:, 0] < w) & (cells[:, 1] >= 0) & (cells[:, 1] < h)]
    if len(cells) > 1:
        cells = cells[np.concatenate([[True], np.any(cells[1:] != cells[:-1], axis=1)])]
    return cells.astype(np.int32)


def encode_lanes(lanes, classes, num_classes: int, out_size: tuple[int, int], stride: int = 4,
                 max_points: int = 512, sigma: float = 2.0, step: float = 1.0) -> dict[str, np.ndarray]:
    """Lane targets of one image (Eq. 3.1 with a fixed sigma, Eq. 3.4).

    lanes: [L, P, 2] pixel polylines (x, y) (NaN rows = padding) or a list of [P_i, 2]; classes [L]. Lanes
    with a class outside [0, num_classes) or no keypoint in the map are skipped. The heatmap holds every
    keypoint; the lists hold the first `max_points` keypoints (lane by lane, in order; the rest are
    truncated), zero-padded with lane_mask 0; lane_instance is the lane's position in `lanes`.

    Returns lane_heatmap [h, w, num_classes] float32, lane_index [N, 2] int32 (row, col), lane_votes [N, 2]
    float32 (xm - x, ym - y) output units, lane_instance [N] int32, lane_mask [N] float32.
    """
    h, w = out_size
    classes = np.asarray(classes, np.int64).reshape(-1)
    cells, votes, inst, cls = [], [], [], []
    for i, (lane, c) in enumerate(zip(lanes, classes)):
        if not 0 <= c < num_classes:
            continue
        kp = lane_keypoints(lane, stride, step, out_size)
        if len(kp) == 0:
            continue
        cells.append(kp)
        votes.append(kp[len(kp) // 2][None, :] - kp)
        inst.append(np.full(len(kp), i))
        cls.append(np.full(len(kp), c))

    index = np.zeros((max_points, 2), np.int32)
    vote = np.zeros((max_points, 2), np.float32)
    instance = np.zeros((max_points,), np.int32)
    mask = np.zeros((max_points,), np.float32)
    # Every keypoint sits on a cell, so all Gaussians share one (2r + 1)^2 kernel: scatter-max it into a map
    # padded by r (no bounds checks), then crop.
    r = int(math.ceil(3 * sigma))
    wp = w + 2 * r
    heat = np.zeros((h + 2 * r) * wp * num_classes, np.float32)
    if cells:
        kp, cl = np.concatenate(cells), np.concatenate(cls)
        d = np.arange(-r, r + 1)
        kern = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / float(sigma) ** 2).astype(np.float32).ravel()
        shift = ((d[:, None] * wp + d[None, :]) * num_classes).ravel()
        base = np.unique(((kp[:, 1] + r) * wp + kp[:, 0] + r) * num_classes + cl)
        np.maximum.at(heat, (base[:, None] + shift[None, :]).ravel(), np.tile(kern, len(base)))
        n = min(len(kp), max_points)
        index[:n] = kp[:n, ::-1]
        vote[:n] = np.concatenate(votes)[:n]
        instance[:n] = np.concatenate(inst)[:n]
        mask[:n] = 1.0
    heat = heat.reshape(h + 2 * r, wp, num_classes)[r:r + h, r:r + w]
    return {"lane_heatmap": np.ascontiguousarray(heat), "lane_index": index, "lane_votes": vote,
            "lane_instance": instance, "lane_mask": mask}
