"""Lane polyline geometry for the BDD100K reader (thesis Sec. 3.4.1): Bezier sampling, DTW and de-duplication.

BDD100K (Scalabel) draws a lane as a `poly2d`: vertices plus a `types` string, one character per vertex,
'L' for a vertex on the curve and 'C' for a cubic Bezier control point; "L C C L" is the cubic from the
first L to the last with the two C as its control points, "L L" a straight segment. The dataset labels
each painted line by its two edges, two nearly parallel annotations of the same class. The thesis merges
them: every annotation is sampled to a list of points, the distance between two annotations of the same
class is their Dynamic Time Warping distance, and a pair closer than a threshold is replaced by the
average of the two sequences along the DTW alignment (the line's centre).

All functions work on float [n, 2] (x, y) pixel arrays, numpy only.
"""

from __future__ import annotations

import math
import re

import numpy as np

POLY2D_TYPES = re.compile(r"L(?:L|CCL)*")       # a vertex, then straight segments and cubic pieces
_BEZIER_FINE_SAMPLES = 101                       # points of the polyline that measures a cubic's arc length


def check_poly2d(vertices, types: str, closed: bool = False) -> tuple[np.ndarray, str]:
    """(float64 [n, 2] vertices, types) of a poly2d, the first vertex repeated at the end when `closed`;
    ValueError when the vertices are not n (x, y) pairs or `types` is not n characters of the L / LCCL form."""
    points = np.asarray(vertices, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"poly2d vertices must be a non-empty list of [x, y], got shape {points.shape}")
    if len(types) != len(points):
        raise ValueError(f"poly2d types {types!r} has {len(types)} characters for {len(points)} vertices")
    if closed:
        points, types = np.concatenate([points, points[:1]]), types + "L"
    if not POLY2D_TYPES.fullmatch(types):
        raise ValueError(f"poly2d types {types!r}: expected 'L' then any of 'L' (line) or 'CCL' (cubic Bezier)")
    if not np.isfinite(points).all():
        raise ValueError("poly2d vertices must be finite numbers")
    return points, types


def _cubic(p0, c1, c2, p1, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t ** 2 * c2 + t ** 3 * p1


def _intervals(length: float, step: float) -> int:
    return max(1, math.ceil(length / step))


def sample_poly2d(vertices, types: str, step: float, closed: bool = False) -> np.ndarray:
    """Dense float64 [P, 2] polyline of a poly2d, points about `step` px apart along every straight segment
    and cubic piece, both end points included. A cubic is evaluated at the parameters of equal arc length
    steps (arc length measured on a fine polyline), so its points lie exactly on the curve."""
    if not step > 0:
        raise ValueError(f"sampling step must be positive, got {step}")
    points, types = check_poly2d(vertices, types, closed)
    pieces, k = [], 0
    while k < len(points) - 1:
        if types[k + 1] == "L":
            p0, p1 = points[k], points[k + 1]
            n = _intervals(np.linalg.norm(p1 - p0), step)
            pieces.append(p0 + (np.arange(n) / n)[:, None] * (p1 - p0))
            k += 1
        else:
            control, fine_t = points[k:k + 4], np.linspace(0.0, 1.0, _BEZIER_FINE_SAMPLES)
            fine = _cubic(*control, fine_t)
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(fine, axis=0), axis=1))])
            n = _intervals(arc[-1], step)
            pieces.append(_cubic(*control, np.interp(np.arange(n) / n * arc[-1], arc, fine_t)))
            k += 3
    return np.concatenate([*pieces, points[-1:]])


def resample_polyline(points, num: int) -> np.ndarray:
    """float64 [num, 2]: `num` points equally spaced by arc length along the polyline `points` [n, 2], from
    its first point to its last; a single point or a zero-length line gives its first point `num` times."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"expected a non-empty [n, 2] polyline, got shape {points.shape}")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    if arc[-1] == 0:
        return np.repeat(points[:1], num, axis=0)
    target = np.linspace(0.0, arc[-1], num)
    return np.stack([np.interp(target, arc, points[:, 0]), np.interp(target, arc, points[:, 1])], axis=1)


def _point_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] Euclidean distances between the points of a [n, 2] and b [m, 2]."""
    return np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def dtw(a, b) -> tuple[float, list[tuple[int, int]]]:
    """Dynamic time warping of point sequences a [n, 2] and b [m, 2], Euclidean point cost.

    Returns (distance, path): path is the optimal alignment, the (i, j) index pairs from (0, 0) to
    (n - 1, m - 1), each step advancing i, j or both; distance is the path's total cost divided by its
    number of pairs, i.e. the mean distance in pixels between aligned points.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"dtw needs non-empty sequences, got {len(a)} and {len(b)} points")
    n, m = len(a), len(b)
    cost = _point_distances(a, b)
    total = np.full((n + 1, m + 1), np.inf)     # total[i, j]: best cost aligning a[:i] with b[:j]
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        # A path enters row i at some column k from row i - 1 (a step down or diagonal), then runs right to
        # j adding cost[i - 1, k + 1 .. j] = run[j] - run[k]: the minimum over k <= j is a running minimum.
        entering = cost[i - 1] + np.minimum(total[i - 1, 1:], total[i - 1, :-1])
        run = np.cumsum(cost[i - 1])
        total[i, 1:] = run + np.minimum.accumulate(entering - run)
    path, i, j = [(n - 1, m - 1)], n, m
    while (i, j) != (1, 1):
        steps = ((i - 1, j - 1), (i - 1, j), (i, j - 1))           # diagonal first: it wins ties
        i, j = min(steps, key=lambda s: total[s])
        path.append((i - 1, j - 1))
    path.reverse()
    return float(total[n, m] / len(path)), path


def merge_lane_pair(a, b) -> np.ndarray:
    """float64 [len(path), 2]: the midpoints of the DTW-aligned points of a and b, in path order (the centre
    line of two edges drawn in the same direction)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    i, j = np.asarray(dtw(a, b)[1]).T
    return (a[i] + b[j]) / 2


def _dtw_lower_bound(a: np.ndarray, b: np.ndarray) -> float:
    """A cheap lower bound of dtw(a, b)[0], for a reversed b as well: every point of a is aligned with at
    least one point of b, at no less than its nearest distance (the same for b), and a path has at most
    n + m - 1 pairs."""
    cost = _point_distances(a, b)
    return max(cost.min(axis=1).sum(), cost.min(axis=0).sum()) / (len(a) + len(b) - 1)


def deduplicate_lanes(lanes, classes, threshold: float) -> tuple[list[np.ndarray], list[int]]:
    """Merges the two edge annotations of each painted line into its centre line.

    lanes: sequence of float [P_i, 2] polylines; classes: their class ids. Two lanes of the same class
    whose DTW distance is below `threshold` px are a pair, the second taken reversed when that matches
    better (edges drawn in opposite directions); pairs are formed greedily from the smallest distance,
    each lane in at most one pair. A pair becomes `merge_lane_pair` of the two (in the first one's
    place and direction); every other lane is kept as it is. Returns (lanes, classes) as lists.
    """
    lanes = [np.asarray(lane, np.float64) for lane in lanes]
    classes = [int(c) for c in classes]
    if len(lanes) != len(classes):
        raise ValueError(f"{len(lanes)} lanes but {len(classes)} classes")
    candidates = []
    for p in range(len(lanes)):
        for q in range(p + 1, len(lanes)):
            if classes[p] != classes[q] or _dtw_lower_bound(lanes[p], lanes[q]) >= threshold:
                continue
            forward, backward = dtw(lanes[p], lanes[q])[0], dtw(lanes[p], lanes[q][::-1])[0]
            distance = min(forward, backward)
            if distance < threshold:
                candidates.append((distance, p, q, backward < forward))
    merged, dropped = {}, set()
    for _, p, q, reverse in sorted(candidates):
        if {p, q} & (merged.keys() | dropped):
            continue
        merged[p] = merge_lane_pair(lanes[p], lanes[q][::-1] if reverse else lanes[q])
        dropped.add(q)
    kept = [k for k in range(len(lanes)) if k not in dropped]
    return [merged.get(k, lanes[k]) for k in kept], [classes[k] for k in kept]


def fit_lanes(points, labels, classes, valid, degree: int = 2, min_points: int = 3,
              num_samples: int = 32) -> list[tuple[list[np.ndarray], list[int]]]:
    """Host side: a least-squares polynomial per cluster -> per image (polylines [num_samples, 2], classes).

    points [B, k, 2] pixel (x, y), labels [B, k] (`cluster_lanes`), classes [B, k], valid [B, k]. A cluster
    spanning at least as much vertically as horizontally is fitted as x = f(y), else y = f(x), of degree
    min(degree, distinct values - 1), and sampled at `num_samples` evenly spaced values over its extent.
    Clusters with fewer than `min_points` points are dropped. Lanes come in order of their labels."""
    points, labels = np.asarray(points, np.float64), np.asarray(labels)
    classes, valid = np.asarray(classes), np.asarray(valid, bool)
    out = []
    for b in range(points.shape[0]):
        lanes, lane_classes = [], []
        ok = valid[b] & (labels[b] >= 0)
        for lab in np.unique(labels[b][ok]):
            members = ok & (labels[b] == lab)
            if members.sum() < min_points:
                continue
            p = points[b][members]
            vertical = np.ptp(p[:, 1]) >= np.ptp(p[:, 0])
            t, v = (p[:, 1], p[:, 0]) if vertical else (p[:, 0], p[:, 1])
            deg = min(degree, len(np.unique(t)) - 1)
            ts = np.linspace(t.min(), t.max(), num_samples)
            if deg < 1:
                vs = np.full_like(ts, v.mean())
            else:
                vs = np.polynomial.polynomial.polyval(ts, np.polynomial.polynomial.polyfit(t, v, deg))
            lanes.append(np.stack([vs, ts] if vertical else [ts, vs], axis=1).astype(np.float32))
            lane_classes.append(int(classes[b][lab]))
        out.append((lanes, lane_classes))
    return out
