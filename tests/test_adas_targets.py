"""ADAS targets and decoding (seed 000, section 3.3.1): Eq. 3.1 heatmaps, Eq. 3.2 boxes, Eq. 3.4 lane votes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest

from jaxvision import adas_decode as D
from jaxvision.data import adas_targets as T
from jaxvision.data import lane_geometry
from jaxvision.export.onnx_graph import check, to_onnx

S = 4


# ------------------------------------------------------------------------------------------- detection
def _random_image_boxes(rng, n, num_classes, h, w):
    """n boxes (pixels) with distinct centre cells (over all classes: the offset map has one vector a cell)."""
    cells = rng.choice(h * w, n, replace=False)
    cy, cx = np.divmod(cells, w)
    u = rng.uniform(-0.45, 0.45, (n, 2))                       # sub-cell position of the true centre
    centre = (np.stack([cx, cy], 1) + u) * S
    size = rng.uniform(2, 60, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    return boxes, rng.integers(0, num_classes, n), rng.integers(0, 2, n)


def test_encode_then_decode_recovers_boxes_classes_and_occlusion_under_jit():
    rng = np.random.default_rng(0)
    h, w, k, n = 32, 64, 3, 12
    images = [_random_image_boxes(rng, n, k, h, w) for _ in range(2)]
    heat = np.zeros((2, h, w, k), np.float32)
    offsets = np.zeros((2, h, w, 4), np.float32)
    occlusion = np.zeros((2, h, w, 1), np.float32)
    for b, (boxes, classes, occluded) in enumerate(images):
        t = T.encode_detections(boxes, classes, occluded, k, (h, w), stride=S, max_objects=16)
        assert t["det_mask"].sum() == n and t["heatmap"].shape == (h, w, k)
        m = t["det_mask"] > 0
        rows, cols = t["det_index"][m].T
        heat[b] = t["heatmap"]
        offsets[b, rows, cols] = t["det_offsets"][m]
        occlusion[b, rows, cols, 0] = np.where(t["det_occluded"][m] > 0, 10.0, -10.0)

    decode = jax.jit(D.decode_detections, static_argnames=("stride", "top_k"))
    out = jax.device_get(decode(heat, offsets, occlusion, stride=S, top_k=50))
    assert out["boxes"].shape == (2, 50, 4) and out["classes"].dtype == np.int32
    for b, (boxes, classes, occluded) in enumerate(images):
        scores = out["scores"][b]
        assert np.all(scores[:n] == 1.0) and np.all(scores[n:] < 1.0)  # the n centres are the top peaks
        got = sorted(zip(out["boxes"][b][:n].tolist(), out["classes"][b][:n], out["occluded"][b][:n]))
        want = sorted(zip(boxes.tolist(), classes, occluded))
        for (gb, gc, go), (wb, wc, wo) in zip(got, want):
            np.testing.assert_allclose(gb, wb, atol=1e-4)
            assert gc == wc and (go > 0.5) == bool(wo)


def test_detection_targets_skip_truncate_and_clip():
    boxes = np.array([[8, 8, 24, 24], [30, 30, 30, 40], [0, 0, 8, 8], [-40, 10, -20, 30], [40, 40, 56, 48]], float)
    classes = np.array([0, 1, 5, 1, 1])  # box 1 has zero width, box 2 an unknown class
    t = T.encode_detections(boxes, classes, [1, 0, 0, 0, 1], num_classes=2, out_size=(16, 16), stride=S,
                            max_objects=2)
    np.testing.assert_array_equal(t["det_mask"], [1, 1])
    np.testing.assert_array_equal(t["det_index"], [[4, 4], [5, 0]])  # centre (-30, 20) px clipped to column 0
    np.testing.assert_array_equal(t["det_class"], [0, 1])
    np.testing.assert_allclose(t["det_offsets"][0], [4 - 2, 4 - 2, 4 - 6, 4 - 6])  # Eq. 3.2 at cell (4, 4)
    np.testing.assert_allclose(t["det_offsets"][1], [0 + 10, 5 - 2.5, 0 + 5, 5 - 7.5])
    assert t["heatmap"][11, 12, 1] == 1.0  # the third valid box is drawn, though not listed
    assert t["heatmap"][5, 0, 1] == 1.0 and t["heatmap"][4, 4, 0] == 1.0
    empty = T.encode_detections(np.zeros((0, 4)), [], [], 2, (16, 16), max_objects=3)
    assert empty["heatmap"].sum() == 0 and empty["det_mask"].sum() == 0 and empty["det_index"].shape == (3, 2)


# ------------------------------------------------------------------------------------- Eq. 3.1, radius
def test_eq_3_1_gaussian_values_and_elementwise_max():
    # Box centres at cells (x, y) = (10, 5) and (13, 5), class 0, and (10, 5) in class 1 with sigma 1.
    boxes = np.array([[36, 16, 44, 24], [48, 16, 56, 24], [36, 16, 44, 24]], float)
    t = T.encode_detections(boxes, [0, 0, 1], [0, 0, 0], 2, (12, 20), stride=S, sigma=2.0)
    heat = t["heatmap"]
    np.testing.assert_array_equal(t["det_index"][:3], [[5, 10], [5, 13], [5, 10]])
    # exp(-d^2 / sigma^2), the thesis' form (no factor 2), sigma = 2
    assert heat[5, 10, 0] == 1.0 and heat[5, 13, 0] == 1.0
    np.testing.assert_allclose(heat[5, 9, 0], math.exp(-1 / 4), rtol=1e-6)       # d^2 = 1 from (10, 5)
    np.testing.assert_allclose(heat[7, 9, 0], math.exp(-5 / 4), rtol=1e-6)       # d^2 = 1 + 4
    # between the two: max(exp(-4/4), exp(-1/4)) at x = 12, not the sum
    np.testing.assert_allclose(heat[5, 12, 0], math.exp(-1 / 4), rtol=1e-6)
    np.testing.assert_allclose(heat[6, 11, 0], max(math.exp(-2 / 4), math.exp(-5 / 4)), rtol=1e-6)
    np.testing.assert_allclose(heat[5, 17, 0], math.exp(-16 / 4), rtol=1e-5)
    np.testing.assert_allclose(heat[5, 4, 0], math.exp(-36 / 4), rtol=1e-5)  # 6 cells: inside ceil(3 sigma)
    assert heat[5, 3, 0] == 0.0   # 7 cells from (10, 5): outside the window (e^-12.25 is not drawn)
    np.testing.assert_allclose(heat[5, 11, 1], math.exp(-1 / 4), rtol=1e-6)    # class 1, own Gaussian
    np.testing.assert_allclose(T.gaussian(12, 6, 10, 5, 2.0), math.exp(-5 / 4))


def test_cornernet_radius_and_adaptive_sigma():
    # 10 x 10 box, IoU 0.7: case 3 (4t r^2 - 2t(h+w) r + (t-1)hw = 0, root (b + sqrt(b^2 - 4ac)) / 2) wins:
    # a = 2.8, b = -28, c = -30
    r3 = (-2 * 0.7 * 20 + math.sqrt((2 * 0.7 * 20) ** 2 + 4 * 4 * 0.7 * 0.3 * 100)) / 2
    r1 = (20 + math.sqrt(400 - 4 * 100 * 0.3 / 1.7)) / 2
    r2 = (40 + math.sqrt(1600 - 16 * 30)) / 2
    assert r3 == pytest.approx((-28 + math.sqrt(1120)) / 2) and r3 < min(r1, r2)
    assert T.gaussian_radius(10, 10) == pytest.approx(r3) == pytest.approx(2.7332005)
    assert T.gaussian_radius(4, 8) == pytest.approx((-16.8 + math.sqrt(16.8 ** 2 + 4 * 2.8 * 9.6)) / 2)
    assert T.adaptive_sigma(10, 10) == pytest.approx(5 / 6)   # r = 2 -> (2r + 1) / 6
    assert T.adaptive_sigma(4, 8) == pytest.approx(0.5)       # r = 1
    assert T.adaptive_sigma(1, 1) == T.MIN_SIGMA               # r = 0 -> 1/6, floored
    # sigma=None draws the box-adaptive Gaussian: a 40 x 40 px box at S = 4 is 10 x 10 cells
    t = T.encode_detections([[20, 20, 60, 60]], [0], [0], 1, (20, 20), stride=S)
    np.testing.assert_allclose(t["heatmap"][10, 11, 0], math.exp(-1 / (5 / 6) ** 2), rtol=1e-6)


# ------------------------------------------------------------------------------------------- peaks
def test_peaks_keeps_plateaus_and_ties():
    x = np.zeros((1, 6, 6, 1), np.float32)
    x[0, 1:3, 1:3, 0] = 0.8                       # a 2 x 2 plateau: all four cells kept
    x[0, 4, 4, 0], x[0, 4, 5, 0] = 0.6, 0.6       # two equal neighbours: both kept
    x[0, 3, 3, 0] = 0.5                           # lower than the plateau next to it: dropped
    x[0, 0, 5, 0] = 0.3                           # an isolated peak at the border: kept
    out = np.asarray(jax.jit(D.peaks)(x))[0, ..., 0]
    kept = {tuple(c) for c in np.argwhere(out > 0)}
    assert kept == {(1, 1), (1, 2), (2, 1), (2, 2), (4, 4), (4, 5), (0, 5)}
    assert out[1, 1] == 0.8 and out[3, 3] == 0


# -------------------------------------------------------------------------------------------- lanes
def test_lane_keypoints_sampling_midpoint_and_votes():
    kp = T.lane_keypoints([[0, 0], [40, 0]], S)
    np.testing.assert_array_equal(kp, np.stack([np.arange(11), np.zeros(11)], 1))
    kp = T.lane_keypoints([[-8, 4], [8, 4], [8, 4], [np.nan, np.nan]], S, step=0.5, out_size=(4, 2))
    np.testing.assert_array_equal(kp, [[0, 1], [1, 1]])  # outside dropped, duplicates merged
    t = T.encode_lanes([[[0, 0], [40, 0]], [[16, 60], [16, 28]]], [1, 0], 2, (16, 16), stride=S, max_points=14)
    np.testing.assert_array_equal(t["lane_mask"], [1] * 14)  # 11 + 9 keypoints, truncated to 14
    np.testing.assert_array_equal(t["lane_index"][:11], np.stack([np.zeros(11), np.arange(11)], 1))
    np.testing.assert_array_equal(t["lane_votes"][:11], np.stack([5 - np.arange(11), np.zeros(11)], 1))
    np.testing.assert_array_equal(t["lane_instance"], [0] * 11 + [1] * 3)
    np.testing.assert_array_equal(t["lane_index"][11:14], [[15, 4], [14, 4], [13, 4]])
    np.testing.assert_array_equal(t["lane_votes"][11:14], [[0, -4], [0, -3], [0, -2]])  # midpoint (4, 11)
    heat = t["lane_heatmap"]
    assert heat[0, 3, 1] == 1.0 and heat[11, 4, 0] == 1.0 and heat[0, 3, 0] == 0.0
    np.testing.assert_allclose(heat[1, 3, 1], math.exp(-1 / 4), rtol=1e-6)
    np.testing.assert_allclose(heat[11, 6, 0], math.exp(-4 / 4), rtol=1e-6)
    empty = T.encode_lanes(np.zeros((0, 2, 2)), [], 2, (16, 16), max_points=8)
    assert empty["lane_heatmap"].shape == (16, 16, 2) and not empty["lane_heatmap"].any()
    assert empty["lane_mask"].sum() == 0 and empty["lane_index"].shape == (8, 2)


H, W = 64, 128
_Y = np.linspace(0, H - 1, 400)
_XS = np.linspace(45, 85, 100)
LANES = [np.stack([12 + 0.35 * _Y, _Y], 1),                          # class 0, straight
         np.stack([110 - 0.8 * _Y + 0.012 * _Y ** 2, _Y], 1),       # class 0, curved
         np.stack([_XS, 52 + 0.05 * (_XS - 45)], 1),                 # class 1, near-horizontal
         np.stack([59 - 0.004 * (_Y[:240] - 32) ** 2, _Y[:240]], 1)]  # class 1, curved, upper part
LANE_CLASSES = [0, 0, 1, 1]


def _dist_to_curve(points, curve):
    return np.min(np.hypot(points[:, None, 0] - curve[None, :, 0], points[:, None, 1] - curve[None, :, 1]), 1)


def test_lanes_encode_decode_cluster_fit_recovers_every_lane():
    h, w = H // S, W // S
    images = [LANES, [np.stack([W - 1 - p[:, 0], p[:, 1]], 1) for p in LANES]]  # second image mirrored
    heat = np.zeros((2, h, w, 2), np.float32)
    offsets = np.zeros((2, h, w, 2), np.float32)
    for b, lanes in enumerate(images):
        t = T.encode_lanes(lanes, LANE_CLASSES, 2, (h, w), stride=S)
        m = t["lane_mask"] > 0
        rows, cols = t["lane_index"][m].T
        assert len(set(zip(rows, cols))) == m.sum()  # no two lanes share a cell (one offset map for all)
        heat[b], offsets[b, rows, cols] = t["lane_heatmap"], t["lane_votes"][m]

    # threshold 0.5 sits between the target's e^-1 and e^-1/4 (see lane_candidates): besides the keypoints
    # only one cell past each lane end survives, and it votes for itself (no target offset there).
    points = jax.jit(D.decode_lane_points, static_argnames=("stride", "top_k", "threshold"))(
        heat, offsets, stride=S, top_k=256, threshold=0.5)
    labels = jax.jit(D.cluster_lanes, static_argnames="distance")(
        points["midpoints"], points["classes"], points["valid"], distance=6.0)
    fits = lane_geometry.fit_lanes(points["points"], labels, points["classes"], points["valid"], degree=2, min_points=3)
    for (polylines, classes), lanes in zip(fits, images):
        assert len(polylines) == len(lanes)
        assert sorted(classes) == sorted(LANE_CLASSES)
        matched = set()
        for poly, c in zip(polylines, classes):
            assert poly.shape == (32, 2)
            # The decoded points are cells * S: each is within S/2 px of the curve per coordinate, so a
            # 1 px bound on every sample is not reachable (the near-horizontal lane only spans rows 13-14);
            # allow S/2 + 1 px at any sample and 1 px on average.
            errors = {i: _dist_to_curve(poly, lanes[i]) for i in range(len(lanes)) if LANE_CLASSES[i] == c}
            i = min(errors, key=lambda j: errors[j].max())
            assert errors[i].max() <= S / 2 + 1 and errors[i].mean() <= 1.0, (i, errors[i])
            matched.add(i)
        assert matched == set(range(len(lanes)))  # one cluster per lane


def test_lane_candidates_on_a_target_heatmap_are_the_keypoints():
    h, w = H // S, W // S
    t = T.encode_lanes(LANES, LANE_CLASSES, 2, (h, w), stride=S)
    heat = t["lane_heatmap"]
    keypoints = heat == 1.0
    for threshold in (0.3, 0.5, 0.9):
        cand = np.asarray(D.lane_candidates(jnp.asarray(heat)[None], threshold))[0]
        assert np.all(cand[keypoints])
    cand = np.asarray(D.lane_candidates(jnp.asarray(heat)[None], 0.5))[0]
    extra = np.argwhere(cand & ~keypoints)
    # the only extra cells are next to a lane's first or last keypoint
    ends = [(T.lane_keypoints(p, S, out_size=(h, w))[[0, -1]], c) for p, c in zip(LANES, LANE_CLASSES)]
    for r, col, c in extra:
        assert any(np.min(np.abs(e - [col, r]).sum(1)) == 1 for e, ec in ends if ec == c), (r, col, c)
    # a horizontal ridge keeps one cell per column, not the flat rows beside it (heat e^-1/4 >= 0.5)
    flat = T.encode_lanes([[[8, 32], [120, 32]]], [0], 1, (h, w), stride=S)["lane_heatmap"]
    cand = np.asarray(D.lane_candidates(jnp.asarray(flat)[None], 0.5))[0, ..., 0]
    assert set(np.argwhere(cand)[:, 0]) == {8} and cand[8, 2:31].all()  # + one cell past each end


def test_cluster_lanes_chain_groups_classes_and_invalid():
    k, distance = 256, 8.0
    rng = np.random.default_rng(0)
    order = rng.permutation(k)                    # chain neighbours are far apart in index order
    mid = np.zeros((2, k, 2), np.float32)
    mid[0, order, 0] = np.arange(k) * 0.99 * distance  # a chain of k points just under the threshold
    mid[1, :100] = rng.uniform(0, 5, (100, 2))          # image 2: two far groups, one invalid point
    mid[1, 100:] = rng.uniform(500, 505, (k - 100, 2))
    classes = np.zeros((2, k), np.int32)
    valid = np.ones((2, k), bool)
    valid[1, 7] = False
    labels = np.asarray(jax.jit(D.cluster_lanes, static_argnames="distance")(mid, classes, valid, distance=distance))
    assert np.all(labels[0] == 0)
    assert labels[1, 7] == -1
    np.testing.assert_array_equal(np.delete(labels[1, :100], 7), 0)
    np.testing.assert_array_equal(labels[1, 100:], 100)
    # a gap of one step over the threshold splits the chain; another class never joins
    mid[0, order[k // 2:], 0] += 0.02 * distance
    classes[1, 100:150] = 1
    labels = np.asarray(D.cluster_lanes(jnp.asarray(mid), jnp.asarray(classes), jnp.asarray(valid), distance))
    first = order[:k // 2].min()
    assert np.all(labels[0, order[:k // 2]] == first) and np.all(labels[0, order[k // 2:]] == order[k // 2:].min())
    assert set(labels[1, 100:150]) == {100} and set(labels[1, 150:]) == {150}


def test_fit_lanes_orientation_min_points_and_degree():
    pts = np.array([[[0, 0], [10, 1], [20, 2], [30, 3], [5, 40], [5, 50], [0, 0], [0, 0]]], np.float32)
    labels = np.array([[0, 0, 0, 0, 4, 4, -1, -1]])
    classes = np.array([[2, 2, 2, 2, 1, 1, 0, 0]])
    valid = labels >= 0
    (polylines, cls), = lane_geometry.fit_lanes(pts, labels, classes, valid, degree=2, min_points=3, num_samples=4)
    assert cls == [2]  # the 2-point cluster is dropped
    np.testing.assert_allclose(polylines[0], [[0, 0], [10, 1], [20, 2], [30, 3]], atol=1e-4)  # y = f(x)
    (polylines, cls), = lane_geometry.fit_lanes(pts, labels, classes, valid, min_points=2, num_samples=3)
    np.testing.assert_allclose(polylines[1], [[5, 40], [5, 45], [5, 50]], atol=1e-4)  # x = f(y), degree 1


# ----------------------------------------------------------------------------------------- export
def test_decoders_export_to_onnx_and_match_onnx_runtime():
    rng = np.random.default_rng(0)
    b, h, w = 2, 8, 16
    heat = rng.uniform(size=(b, h, w, 3)).astype(np.float32)
    box = rng.normal(size=(b, h, w, 4)).astype(np.float32)
    occ = rng.normal(size=(b, h, w, 1)).astype(np.float32)
    lane_heat = rng.uniform(size=(b, h, w, 2)).astype(np.float32)
    lane_off = rng.normal(size=(b, h, w, 2)).astype(np.float32)

    def fn(heat, box, occ, lane_heat, lane_off):
        d = D.decode_detections(heat, box, occ, stride=S, top_k=20)
        p = D.decode_lane_points(lane_heat, lane_off, stride=S, top_k=64, threshold=0.3)
        labels = D.cluster_lanes(p["midpoints"], p["classes"], p["valid"], 6.0)
        return d["boxes"], d["scores"], d["classes"], d["occluded"], p["points"], p["midpoints"], labels

    args = (heat, box, occ, lane_heat, lane_off)
    names = ["heat", "box", "occ", "lane_heat", "lane_off"]
    specs = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in args]
    model = check(to_onnx(fn, specs, names, [f"o{i}" for i in range(7)], dynamic_batch=True))
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, dict(zip(names, args)))
    for g, r in zip(got, jax.device_get(jax.jit(fn)(*args))):
        np.testing.assert_allclose(g, r, atol=1e-5)
