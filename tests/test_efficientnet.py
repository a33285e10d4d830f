"""EfficientNet-B0..B3: torchvision parameter counts, layout, features / dilation, stochastic depth, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxvision.models.efficientnet  # noqa: F401  (registers efficientnet_b0..b3)
from jaxvision import models
from jaxvision.layers.stochastic_depth import StochasticDepth
from jaxvision.models.efficientnet import EfficientNet, MBConv
from conftest import abstract_features, abstract_init
from jaxvision.models import count_params





# torchvision.models.efficientnet_b0..b3 (1000 classes, parameters only).
@pytest.mark.parametrize("name,expected", [("efficientnet_b0", 5_288_548), ("efficientnet_b1", 7_794_184),
                                           ("efficientnet_b2", 9_109_994), ("efficientnet_b3", 12_233_232)])
def test_param_counts_match_torchvision(name, expected):
    assert count_params(abstract_init(models.create(name, num_classes=1000))["params"]) == expected


def test_layout_width_and_depth():
    p = abstract_init(models.create("efficientnet_b0"))["params"]
    assert len([k for k in p if k.startswith("block")]) == 16
    assert sorted(p["block1"]) == ["depthwise", "project", "se"]  # ratio 1: no expansion conv
    assert p["block1"]["se"]["fc1"]["kernel"].shape == (32, 8)  # squeeze = block input channels // 4
    assert p["block2"]["expand"]["conv"]["kernel"].shape == (1, 1, 16, 96)
    assert p["block2"]["se"]["fc1"]["kernel"].shape == (96, 4)
    assert p["block4"]["depthwise"]["conv"]["kernel"].shape == (5, 5, 1, 144)
    assert p["last_conv"]["conv"]["kernel"].shape == (1, 1, 320, 1280)
    assert p["head"]["kernel"].shape == (1280, 1000)
    p3 = abstract_init(models.create("efficientnet_b3", num_classes=None))["params"]
    assert len([k for k in p3 if k.startswith("block")]) == 26  # ceil(n * 1.4) per stage
    assert p3["stem"]["conv"]["kernel"].shape == (3, 3, 3, 40)  # make_divisible(32 * 1.2)
    assert p3["last_conv"]["conv"]["kernel"].shape == (1, 1, 384, 1536) and "head" not in p3


@pytest.mark.parametrize("output_stride,sizes", [(32, (16, 8, 4, 2)), (16, (16, 8, 4, 4)), (8, (16, 8, 8, 8))])
def test_feature_shapes(output_stride, sizes):
    feats = abstract_features(models.create("efficientnet_b0", num_classes=None, output_stride=output_stride))
    assert feats == {s: (1, n, n, c) for s, n, c in zip((4, 8, 16, 32), sizes, (24, 40, 112, 320))}
    if output_stride == 32:
        feats = abstract_features(models.create("efficientnet_b3", num_classes=None))
        assert feats == {s: (1, n, n, c) for s, n, c in zip((4, 8, 16, 32), sizes, (32, 48, 136, 384))}


def test_dilation_at_output_stride_8():
    seen = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Conv) and m.kernel_size[0] > 1:
            seen[m.path[0]] = (m.strides, m.kernel_dilation)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_init(models.create("efficientnet_b0", num_classes=None, output_stride=8))
    assert {k: v[0] for k, v in seen.items() if v[0] != 1} == {"stem": 2, "block2": 2, "block4": 2}
    # block6 (stride 16) keeps dilation 1 and the blocks after it use 2; block12 (stride 32) keeps 2, then 4.
    assert [seen[f"block{i}"][1] for i in range(1, 17)] == [1] * 6 + [2] * 6 + [4] * 4


def test_stochastic_depth_drops_whole_samples():
    x = jnp.ones((64, 2, 3, 4))
    layer = StochasticDepth(0.5)
    assert layer.apply({}, x, deterministic=True) is x
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    per_sample = y.reshape(64, -1)
    assert np.all((per_sample == per_sample[:, :1]))  # one decision per sample
    assert set(np.unique(per_sample)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - rate)


def test_mbconv_stochastic_depth_train_and_eval():
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 4, 4, 8))
    block, plain = MBConv(8, 2, drop_path_rate=0.5), MBConv(8, 2)

    @jax.jit
    def run(v, x):
        rngs = {"dropout": jax.random.PRNGKey(3)}
        train = [m.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)[0] for m in (block, plain)]
        return [m.apply(v, x, train=False) for m in (block, plain)] + train

    v = jax.jit(lambda x: block.init(jax.random.PRNGKey(0), x, train=False))(x)
    assert sorted(v["params"]) == ["depthwise", "expand", "project", "se"]  # stochastic depth holds no parameters
    eval_block, eval_plain, out, full = map(np.asarray, run(v, x))
    x = np.asarray(x)
    np.testing.assert_array_equal(eval_block, eval_plain)  # identity at eval
    kept = []
    for i in range(16):
        if np.allclose(out[i], x[i]):  # residual branch dropped for the whole sample
            kept.append(False)
        else:  # kept, scaled by 1 / (1 - 0.5)
            np.testing.assert_allclose(out[i] - x[i], 2 * (full[i] - x[i]), rtol=1e-4, atol=1e-5)
            kept.append(True)
    assert 0 < sum(kept) < 16


def test_logits_and_errors():
    model = models.create("efficientnet_b1", num_classes=5)
    v = abstract_init(model)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=True, mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.PRNGKey(1)})[0], v)
    assert out.shape == (2, 5) and out.dtype == jnp.float32
    assert "variant" not in models.model_options("efficientnet_b2")
    with pytest.raises(ValueError, match="variant 'b9'"):
        EfficientNet(variant="b9")
    with pytest.raises(ValueError, match="output_stride 4"):
        models.create("efficientnet_b0", output_stride=4)
    with pytest.raises(ValueError, match="drop_path_rate 1.0"):
        EfficientNet(drop_path_rate=1.0)
