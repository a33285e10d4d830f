"""The driver-monitoring model (seed 000, 2.3.3), its output layout (Table 2.1) and the task's Eq. 2.13 loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvision import models, profile
from jaxvision.config import ConfigError, load_config_file
from jaxvision.models import dms
from jaxvision.tasks import get_task
from jaxvision.train import swa


def _params(model, size=64):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("size", ["tiny", "small", "large"])
def test_sizes_match_table_2_6_parameters_and_table_2_8_macs(size):
    model = models.create(f"dms_{size}")
    params = _params(model)
    assert params == {"tiny": 124_545, "small": 704_729, "large": 2_329_873}[size]
    assert abs(params / dms.THESIS_PARAMS[size] - 1) < 1e-3
    prof = profile.profile_model(model, (1, 160, 160, 3), xla=False)
    assert abs(prof.macs / dms.THESIS_MACS[size] - 1) < 0.01


def test_hand_counted_tiny_stem_and_head():
    """Stem 3x3x3x16 conv + BN (2 x 16); head Dense (16 + 56 + 152 -> 209) with bias."""
    variables = models.create("dms_tiny").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    stem = variables["params"]["stem"]
    assert stem["conv"]["kernel"].shape == (3, 3, 3, 16) and stem["norm"]["scale"].shape == (16,)
    assert variables["params"]["head"]["kernel"].shape == (16 + 56 + 152, 209)


@pytest.mark.parametrize("landmark_init", [0.5, 0.0])
def test_head_starts_the_landmarks_at_landmark_init_and_the_rest_at_zero(landmark_init):
    model = dms.DMSNet(size="tiny", landmark_init=landmark_init)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    bias = variables["params"]["head"]["bias"]
    np.testing.assert_array_equal(bias, np.r_[np.full(196, landmark_init), np.zeros(13)])
    variables = jax.tree_util.tree_map_with_path(  # a zero head kernel: the output is the bias
        lambda path, x: jnp.zeros_like(x) if "head" in str(path) and "kernel" in str(path) else x, variables)
    landmarks = dms.split_outputs(model.apply(variables, jnp.ones((2, 32, 32, 3)), train=False))["landmarks"]
    np.testing.assert_array_equal(landmarks, np.full((2, 98, 2), landmark_init))


def test_soft_argmax_pooling_reads_where_a_channel_fires():
    """Channel 0 of a 2 x 4 map is ln 9 at row 1, column 2 and 0 elsewhere: its softmax puts 9/16 there and
    1/16 on each other pixel. Pixel centres: x = (2k + 1) / 4 - 1, y = -0.5 / 0.5; the uniform part averages to
    0, so E[x] = (9/16 - 1/16) * 0.25 = 0.125 and E[y] = 0.5 * 0.5 = 0.25. Channel 1 is constant: mean 1, E = 0."""
    feature_map = jnp.zeros((1, 2, 4, 2)).at[0, 1, 2, 0].set(np.log(9.0)).at[:, :, :, 1].set(1.0)
    np.testing.assert_allclose(dms.pool_features(feature_map, "mean"), [[np.log(9.0) / 8, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(dms.pool_features(feature_map, "soft_argmax"),
                               [[np.log(9.0) / 8, 1.0, 0.125, 0.0, 0.25, 0.0]], rtol=1e-6, atol=1e-7)
    variables = dms.DMSNet(size="tiny", pool="soft_argmax").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                                                 train=False)
    assert variables["params"]["head"]["kernel"].shape == (3 * (16 + 56 + 152), 209)
    with pytest.raises(ValueError, match="DMS pool 'max' is unknown; choose one of mean, soft_argmax"):
        dms.DMSNet(size="tiny", pool="max")


def test_sample_at_points_is_bilinear_interpolation_with_zeros_beyond_the_border():
    """Against scipy's order-1 `map_coordinates` at random points between the outer cell centres; half a cell
    outside the first column's centre the tent weights give half the border cell (zero padding); the gradient
    with respect to the points is the map's slope."""
    from scipy import ndimage
    rng = np.random.default_rng(0)
    feature_map = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    points = rng.uniform([0.5 / 5, 0.5 / 3], [4.5 / 5, 2.5 / 3], (2, 6, 2)).astype(np.float32)
    sampled = np.asarray(dms.sample_at_points(jnp.asarray(feature_map), jnp.asarray(points)))
    rows, cols = points[..., 1] * 3 - 0.5, points[..., 0] * 5 - 0.5
    expected = np.stack([np.stack([ndimage.map_coordinates(feature_map[b, :, :, c], [rows[b], cols[b]], order=1)
                                   for c in range(4)], -1) for b in range(2)])
    np.testing.assert_allclose(sampled, expected, rtol=1e-5, atol=1e-6)
    edge = dms.sample_at_points(jnp.asarray(feature_map), jnp.asarray([[[0.0, 0.5 / 3]]] * 2, jnp.float32))
    np.testing.assert_allclose(edge[:, 0], 0.5 * feature_map[:, 0, 0], rtol=1e-6)
    # The points get gradients: on the map 10 r + c the value grows by 5 per crop unit in x (5 cells) and by
    # 30 in y (3 rows of 10).
    ramp = jnp.asarray(10 * np.arange(3)[:, None] + np.arange(5)[None, :], jnp.float32)[None, :, :, None]
    slope = jax.grad(lambda p: dms.sample_at_points(ramp, p).sum())(jnp.asarray([[[0.43, 0.51]]]))
    np.testing.assert_allclose(slope, [[[5.0, 30.0]]], rtol=1e-5)


def test_landmark_refinement_adds_a_per_landmark_offset_read_where_the_head_points():
    """With `refine=(2, 4)` the stride-2 and stride-4 maps are sampled at the head's landmarks and each landmark
    adds its own linear map of the samples (in stride-2 cells). A zero kernel leaves the thesis head's output;
    only the landmarks move."""
    from scipy import ndimage
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
    plain, refined = dms.DMSNet(size="tiny"), dms.DMSNet(size="tiny", refine=(2, 4))
    variables = refined.init(jax.random.PRNGKey(0), x, train=False)
    kernel = variables["params"]["refine_kernel"]
    assert kernel.shape == (98, 16 + 16, 2) and not np.any(kernel)
    head_only = {k: v for k, v in variables["params"].items() if k != "refine_kernel"}
    head = plain.apply({**variables, "params": head_only}, x, train=False)
    np.testing.assert_array_equal(refined.apply(variables, x, train=False), head)

    kernel = np.random.default_rng(2).normal(0, 0.1, kernel.shape).astype(np.float32)
    variables = {**variables, "params": {**variables["params"], "refine_kernel": kernel}}
    out, state = refined.apply(variables, x, train=False,
                               capture_intermediates=lambda module, _: module.name in ("block4", "block5"))
    maps = [np.asarray(state["intermediates"][name]["__call__"][0]) for name in ("block4", "block5")]  # 16x16, 8x8
    points = np.asarray(dms.split_outputs(head)["landmarks"])
    local = np.concatenate([np.stack([np.stack([ndimage.map_coordinates(
        m[b, :, :, c], [points[b, :, 1] * m.shape[1] - 0.5, points[b, :, 0] * m.shape[2] - 0.5], order=1,
        mode="grid-constant") for c in range(m.shape[-1])], -1) for b in range(2)]) for m in maps], -1)
    expected = points + np.einsum("bkc,kcd->bkd", local, kernel) / 16
    np.testing.assert_allclose(dms.split_outputs(out)["landmarks"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[:, 196:], head[:, 196:])

    # The sampling positions stay in the graph: moving the head's bias for point 0's x moves the refined point by
    # 1 plus the offset's slope there, which autodiff and a central difference agree on.
    def refined_x0(bias0):
        params = variables["params"]
        bias = params["head"]["bias"].at[0].set(bias0)
        moved = {**variables, "params": {**params, "head": {**params["head"], "bias": bias}}}
        return refined.apply(moved, x, train=False)[:, 0].sum()
    bias0 = variables["params"]["head"]["bias"][0]
    slope = float(jax.grad(refined_x0)(bias0))
    central = float(refined_x0(bias0 + 1e-3) - refined_x0(bias0 - 1e-3)) / 2e-3
    assert abs(slope - 2.0) > 1e-3 and slope == pytest.approx(central, rel=1e-2)
    with pytest.raises(ValueError, match=r"missing \[32\]"):
        dms.DMSNet(size="tiny", refine=(32,)).init(jax.random.PRNGKey(0), x, train=False)


def test_features_at_strides_4_8_16_and_output_vector():
    model = models.create("dms_tiny")
    x = jnp.zeros((2, 160, 160, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    out, feats = model.apply(variables, x, train=False, features=True)
    assert out.shape == (2, 209) and out.dtype == jnp.float32
    assert {s: f.shape for s, f in feats.items()} == {4: (2, 40, 40, 16), 8: (2, 20, 20, 56), 16: (2, 10, 10, 152)}


def test_split_and_decode_follow_table_2_1():
    vector = jnp.arange(2 * 209, dtype=jnp.float32).reshape(2, 209)
    parts = dms.split_outputs(vector)
    np.testing.assert_array_equal(parts["landmarks"][1, 3], [209 + 6, 209 + 7])   # point 3 = values 6, 7
    np.testing.assert_array_equal(parts["eyes"][0], [196, 197, 198, 199])
    np.testing.assert_array_equal(parts["mouth"][0], [200, 201, 202])
    np.testing.assert_array_equal(parts["head_pose"][0], [203, 204, 205])
    np.testing.assert_array_equal(parts["distraction"][0], [206, 207, 208])
    decoded = dms.decode(vector * 0.01)
    np.testing.assert_allclose(decoded["eyes"][0], 1 / (1 + np.exp(-np.array([1.96, 1.97, 1.98, 1.99]))), rtol=1e-6)
    np.testing.assert_allclose(decoded["mouth"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(decoded["head_pose"][0], [2.03, 2.04, 2.05], rtol=1e-6)
    with pytest.raises(ValueError, match="208 values, expected 209"):
        dms.split_outputs(jnp.zeros((1, 208)))


def test_bad_size_and_table_are_named():
    with pytest.raises(ValueError, match="DMS size 'huge' is unknown"):
        models.create("dms", size="huge")
    model = models.create("dms", stages=((1, 8, 1, 1), (2, 16, 1, 2), (2, 16, 1, 2)))  # reaches stride 4 only
    with pytest.raises(ValueError, match=r"missing \[8, 16\]"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)


def _task(**loss_overrides):
    config = load_config_file("configs/dms/small.py")
    config.data.height = config.data.width = 64
    config.loss.update(loss_overrides)
    return get_task(config), config


def _batch(rng, n=2):
    return {"landmarks": jnp.asarray(rng.uniform(0.2, 0.8, (n, 98, 2)), jnp.float32),
            "eyes": jnp.asarray(rng.integers(0, 2, (n, 4)), jnp.float32),
            "mouth": jnp.asarray(rng.integers(0, 3, n), jnp.int32),
            "head_pose": jnp.asarray(rng.uniform(-0.5, 0.5, (n, 3)), jnp.float32),
            "distraction": jnp.asarray(rng.integers(0, 3, n), jnp.int32),
            "confidence": jnp.ones(n, jnp.float32)}


def test_total_loss_is_eq_2_13_with_hand_computed_terms():
    task, config = _task()
    rng = np.random.default_rng(0)
    batch = _batch(rng, 1)
    out = jnp.asarray(rng.normal(0, 0.3, (1, 209)), jnp.float32)
    total, terms = task.loss(out, batch)
    p = dms.split_outputs(out)
    w = config.loss.weights
    x = np.abs(np.asarray(batch["landmarks"] - p["landmarks"]) * 64)      # pixels
    wing = np.where(x < 10, 10 * np.log1p(x / 2), x - (10 - 10 * np.log1p(5))).sum()
    z, y = np.asarray(p["eyes"][0], np.float64), np.asarray(batch["eyes"][0])
    bce = np.sum(np.log1p(np.exp(-z)) + (1 - y) * z)
    log_softmax = lambda v: v - np.log(np.sum(np.exp(v)))  # noqa: E731
    mouth = -log_softmax(np.asarray(p["mouth"][0], np.float64))[int(batch["mouth"][0])]
    distraction = -log_softmax(np.asarray(p["distraction"][0], np.float64))[int(batch["distraction"][0])]
    euler = np.sum(1 - np.cos(np.abs(np.asarray(p["head_pose"][0] - batch["head_pose"][0]))))
    expected = (w.landmarks * wing + w.eyes * bce + w.mouth * mouth + w.head_pose * euler
                + w.distraction * distraction)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss_head_pose"]), w.head_pose * euler, rtol=1e-5)


def test_zero_confidence_removes_a_sample_except_from_distraction():
    task, _ = _task()
    rng = np.random.default_rng(1)
    batch = _batch(rng)
    batch["confidence"] = jnp.array([1.0, 0.0])
    out = jnp.asarray(rng.normal(0, 0.3, (2, 209)), jnp.float32)
    changed = {**batch, **{k: v.at[1].set(v[0] + (0.1 if v.dtype == jnp.float32 else 1) % 3)
                           for k, v in batch.items() if k not in ("confidence", "distraction")}}
    first, terms = task.loss(out, batch)
    second, _ = task.loss(out, changed)
    np.testing.assert_allclose(float(first), float(second), rtol=1e-6)
    other = {**batch, "distraction": batch["distraction"].at[1].set((batch["distraction"][1] + 1) % 3)}
    assert float(task.loss(out, other)[0]) != pytest.approx(float(first))


def test_zero_weight_leaves_a_task_out_and_bad_loss_config_is_named():
    task, _ = _task(weights=ml_collections.ConfigDict(dict(landmarks=1.0, eyes=0.0, mouth=0.0, head_pose=0.0,
                                                           distraction=0.0)))
    _, terms = task.loss(jnp.zeros((2, 209)), _batch(np.random.default_rng(2)))
    assert {k for k in terms if k.startswith("loss_")} == {"loss_landmarks"}
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['gaze'\]"):
        _task(weights=ml_collections.ConfigDict(dict(gaze=1.0)))
    with pytest.raises(ConfigError, match="loss.landmark 'l3' is unknown"):
        _task(landmark="l3")
    with pytest.raises(ConfigError, match="loss.distraction 'hinge' is unknown; choose 'ce' or 'focal'"):
        _task(distraction="hinge")
    with pytest.raises(ConfigError, match=r"distraction_class_weights needs 3 values \(normal, phone, smoking\)"):
        _task(distraction_class_weights=(1.0, 0.5))


def test_focal_and_class_weights_reach_the_distraction_term():
    rng = np.random.default_rng(3)
    batch, out = _batch(rng), jnp.asarray(rng.normal(0, 1, (2, 209)), jnp.float32)
    _, ce = _task()[0].loss(out, batch)
    _, focal = _task(distraction="focal", distraction_class_weights=(1.0, 0.5, 0.5))[0].loss(out, batch)
    p = jax.nn.softmax(dms.split_outputs(out)["distraction"])
    y = np.asarray(batch["distraction"])
    w = np.array([1.0, 0.5, 0.5])[y]
    py = np.asarray(p)[np.arange(2), y]
    np.testing.assert_allclose(float(focal["loss_distraction"]), np.mean(w * (1 - py) ** 2 * -np.log(py)), rtol=1e-5)
    np.testing.assert_allclose(float(ce["loss_distraction"]), np.mean(-np.log(py)), rtol=1e-5)


def test_swa_averaging_link_keeps_the_mean_of_the_snapshots():
    """SGD on f(w) = w^2 / 2 from w = 1, lr 0.1: w_k = 0.9^k; snapshots after updates 3, 5, 7."""
    tx = optax.chain(optax.sgd(0.1), swa.averaging(start=3, every=2))
    params = {"w": jnp.array(1.0)}
    state = tx.init(params)
    for _ in range(8):
        updates, state = tx.update({"w": params["w"]}, state, params)
        params = optax.apply_updates(params, updates)
    average, count = swa.averaged_params(state)
    assert count == 3
    np.testing.assert_allclose(float(average["w"]), np.mean([0.9 ** 3, 0.9 ** 5, 0.9 ** 7]), rtol=1e-6)
    with pytest.raises(ValueError, match="no SWA average"):
        swa.averaged_params(optax.sgd(0.1).init(params))


@pytest.mark.parametrize("options", [dict(pool="mean"), dict(pool="soft_argmax"),
                                     dict(pool="soft_argmax", refine=(2, 4))])
def test_dynamic_batch_export_slices_the_output_vector(options):
    """With a symbolic batch, indexing the output vector must stay a Slice (jnp indexing would trace a gather
    the converter refuses); batch 1 and 3 through one graph match JAX, with either pooling and with the
    landmark refinement (its sampling is arithmetic and matrix products, no gather)."""
    import onnxruntime as ort
    from jaxvision.export import exporter
    exportable = exporter.from_registry("dms_tiny", 48, 48, **options)
    model = exporter.build_onnx(exportable, dynamic_batch=True, layout="nhwc")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        pixels = np.random.default_rng(batch).uniform(0, 255, (batch, 48, 48, 3)).astype(np.float32)
        reference = jax.device_get(jax.jit(exportable.fn)(pixels))
        diffs = exporter.compare(reference, session.run(None, {"image": pixels}), exportable.output_names, "fp32")
        assert all(d.ok for d in diffs), exporter.format_differences(diffs)
