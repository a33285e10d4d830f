"""Decoding of the ADAS model's outputs (seed 000, section 3.3.1) into boxes and lanes.

Conventions as in `jaxvision.data.adas_targets`: NHWC maps at stride S, output cell (row i, column j) at
(x = j, y = i), pixel = output coordinate * S.

Detection (Eq. 3.3): the peaks of the centre heatmaps (3 x 3 max-pool NMS, CenterNet) are ranked over all
classes and cells; at a peak (cx, cy) the offsets o give x1 = (cx - o0) S, y1 = (cy - o1) S,
x2 = (cx - o2) S, y2 = (cy - o3) S (Eq. 3.2 inverted); the score is the peak's heat, occlusion the sigmoid of
the occlusion logit there. No threshold is applied: keep `scores >= threshold` (the thesis drops < 0.25).
Lanes (Eq. 3.4): ridge cells of the lane heatmaps cast the votes cell + offset for their lane's midpoint;
the thesis clusters the votes with an agglomerative algorithm at a fixed distance threshold. Here that is
single linkage (connected components of "same class and votes closer than the threshold"), which needs
no data-dependent control flow; `lane_geometry.fit_lanes` (numpy, host side) then fits a polynomial to each
cluster.

All are jit-compatible with static shapes and export to ONNX (`jaxvision.export`): they use
max-pools, top_k, one-axis gathers, matmuls, comparisons and where.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def peaks(heatmap: jax.Array, pool: int = 3) -> jax.Array:
    """CenterNet NMS on [B, h, w, C]: values equal to their pool x pool neighbourhood max, others 0.

    Ties are kept: every cell of a plateau of equal maxima survives (two Gaussians of equal height one cell
    apart keep both centres)."""
    pad = (pool - 1) // 2
    pooled = lax.reduce_window(heatmap, -jnp.inf, lax.max, (1, pool, pool, 1), (1, 1, 1, 1),
                               ((0, 0), (pad, pool - 1 - pad), (pad, pool - 1 - pad), (0, 0)))
    return jnp.where(heatmap == pooled, heatmap, jnp.zeros_like(heatmap))


def _gather_cells(maps: jax.Array, cell: jax.Array) -> jax.Array:
    """maps [B, h, w, C], cell [B, k] flat cell ids (i * w + j) -> [B, k, C], as one gather along one axis."""
    b, h, w, c = maps.shape
    flat = maps.reshape(b * h * w, c)
    image = jnp.cumsum(jnp.ones((b, 1), cell.dtype), axis=0) - 1  # [B, 1] = 0..B-1 without iota (B symbolic)
    ids = cell + image * (h * w)
    return jnp.take(flat, ids, axis=0, mode="clip")


def _last_axis(arrays) -> jax.Array:
    """jnp.stack(arrays, -1) as a concatenate (jnp.stack lowers to a `stack` primitive the exporter lacks)."""
    return jnp.concatenate([a[..., None] for a in arrays], axis=-1)


def _top_cells(score: jax.Array, top_k: int):
    """score [B, h, w, C] -> top values [B, k], flat cell ids, rows, cols, channels (int32), k <= h w C."""
    b, h, w, c = score.shape
    k = min(top_k, h * w * c)
    values, idx = lax.top_k(score.reshape(b, h * w * c), k)
    idx = idx.astype(jnp.int32)
    cell, channel = lax.div(idx, jnp.int32(c)), lax.rem(idx, jnp.int32(c))
    row, col = lax.div(cell, jnp.int32(w)), lax.rem(cell, jnp.int32(w))
    return values, cell, row, col, channel


def decode_detections(heatmap: jax.Array, box_offsets: jax.Array, occlusion: jax.Array, stride: int = 4,
                      top_k: int = 100) -> dict[str, jax.Array]:
    """Top-k boxes of [B, h, w, K] heatmaps, [B, h, w, 4] Eq. 3.2 offsets and [B, h, w, 1] occlusion logits.

    Returns boxes [B, k, 4] pixel (x1, y1, x2, y2), scores [B, k] (peak heat, descending), classes [B, k]
    int32, occluded [B, k] (probability); k = min(top_k, h w K). No score threshold is applied."""
    scores, cell, row, col, cls = _top_cells(peaks(heatmap), top_k)
    off = _gather_cells(box_offsets, cell)
    cx, cy = col.astype(off.dtype), row.astype(off.dtype)
    centre = _last_axis([cx, cy, cx, cy])
    boxes = (centre - off) * stride
    occ = jax.nn.sigmoid(_gather_cells(occlusion, cell)[..., 0])
    return {"boxes": boxes, "scores": scores, "classes": cls, "occluded": occ}


def lane_candidates(lane_heatmap: jax.Array, threshold: float = 0.3) -> jax.Array:
    """Ridge cells of [B, h, w, L] lane heatmaps: bool [B, h, w, L].

    A cell is kept when its heat is >= threshold and it is a maximum (ties kept) across the ridge: along its
    row, if the heat is concave there (2x - left - right > 0) at least as much as along its column, or along
    its column in the symmetric case, or along both (outside the map counts as 0). So a near-vertical lane
    keeps its centre in every row and a near-horizontal one in every column, where a plain 1 x 3 max-pool
    would also keep the flat rows beside a horizontal ridge.
    On a target heatmap (sigma 2: keypoints 1, their neighbours e^-1/4 = 0.78, two cells away e^-1 = 0.37)
    every keypoint cell is kept. With e^-1 < threshold <= e^-1/4 the other cells kept are (measured on random
    lanes) the ridge's continuation one cell past a lane's end, the cell between two lanes of one class two
    cells apart and, rarely, a border cell next to where a lane leaves the map; with threshold <= e^-1 also
    cells two cells off the corners of a quantised (staircase) lane. Such cells carry no target vote.
    """
    x = lane_heatmap
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]

    def shifted(dy, dx):  # lax slices: numpy-style slicing of a symbolic batch becomes a gather
        return lax.slice_in_dim(lax.slice_in_dim(p, 1 + dy, 1 + dy + h, axis=1), 1 + dx, 1 + dx + w, axis=2)

    up, down, left, right = shifted(-1, 0), shifted(1, 0), shifted(0, -1), shifted(0, 1)
    row_max = (x >= left) & (x >= right)
    col_max = (x >= up) & (x >= down)
    curv_row, curv_col = 2 * x - left - right, 2 * x - up - down
    across_row = row_max & (curv_row > 0) & (curv_row >= curv_col)
    across_col = col_max & (curv_col > 0) & (curv_col >= curv_row)
    return (x >= threshold) & ((row_max & col_max) | across_row | across_col)


def decode_lane_points(lane_heatmap: jax.Array, lane_offsets: jax.Array, stride: int = 4, top_k: int = 256,
                       threshold: float = 0.3) -> dict[str, jax.Array]:
    """Top-k lane keypoints of [B, h, w, L] heatmaps with their Eq. 3.4 votes from [B, h, w, 2] offsets.

    Candidates are `lane_candidates(lane_heatmap, threshold)`, ranked by heat. Returns points [B, k, 2]
    pixel (x, y) of the cell, midpoints [B, k, 2] pixel (cell + offset) * S, classes [B, k] int32, scores
    [B, k] (0 where invalid), valid [B, k] bool; k = min(top_k, h w L)."""
    cand = lane_candidates(lane_heatmap, threshold)
    masked = jnp.where(cand, lane_heatmap, jnp.full_like(lane_heatmap, -1.0))
    values, cell, row, col, cls = _top_cells(masked, top_k)
    valid = values >= 0
    xy = _last_axis([col, row]).astype(lane_offsets.dtype)
    mid = (xy + _gather_cells(lane_offsets, cell)) * stride
    return {"points": xy * stride, "midpoints": mid, "classes": cls,
            "scores": jnp.where(valid, values, jnp.zeros_like(values)), "valid": valid}


def cluster_lanes(midpoints: jax.Array, classes: jax.Array, valid: jax.Array, distance: float) -> jax.Array:
    """Single-linkage clusters of lane votes [B, k, 2] (pixels) at a fixed threshold -> int32 labels [B, k].

    Two valid points of one class are linked when their votes are closer than `distance` (pixels); a cluster
    is a connected component, labelled by its smallest index; invalid points get -1. The components come
    from the transitive closure of the links by ceil(log2 k) squarings of the [k, k] reachability matrix
    (paths of up to 2^n links after n squarings), so any chain of k points converges."""
    k = midpoints.shape[1]
    valid = valid.astype(bool)
    d2 = jnp.sum((midpoints[:, :, None, :] - midpoints[:, None, :, :]) ** 2, axis=-1)
    pair = valid[:, :, None] & valid[:, None, :]
    link = pair & (classes[:, :, None] == classes[:, None, :]) & (d2 < distance * distance)
    link = link | (jnp.eye(k, dtype=bool)[None] & valid[:, :, None])  # valid points reach themselves
    reach = link.astype(jnp.float32)  # 0 / 1
    for _ in range(max(1, math.ceil(math.log2(max(k, 2))))):
        reach = (jnp.matmul(reach, reach) > 0.5).astype(jnp.float32)
    index = jnp.arange(k, dtype=jnp.int32)
    labels = jnp.min(jnp.where(reach > 0.5, index[None, None, :], jnp.int32(k)), axis=-1)
    return jnp.where(valid, labels, jnp.int32(-1)).astype(jnp.int32)


def decode_outputs(outputs: dict, stride: int, top_k: int, lane_top_k: int, lane_threshold: float,
                   lane_cluster_distance: float) -> dict[str, dict]:
    """The model's dense outputs -> {'detections': `decode_detections`, 'lanes': `decode_lane_points` plus the
    cluster 'labels' of `cluster_lanes`}; what evaluation and the exported graph both decode."""
    detections = decode_detections(outputs["heatmap"], outputs["box_offsets"], outputs["occlusion"], stride, top_k)
    lanes = decode_lane_points(outputs["lane_heatmap"], outputs["lane_offsets"], stride, lane_top_k, lane_threshold)
    lanes["labels"] = cluster_lanes(lanes["midpoints"], lanes["classes"], lanes["valid"], lane_cluster_distance)
    return {"detections": detections, "lanes": lanes}
