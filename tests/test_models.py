"""Layers, ResNet and DeepLabv3+: torchvision parameter counts, shapes, dilations and hand-computed values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.layers import ASPP, ConvNormAct, ImagePooling
from jaxvision.models import DeepLabV3Plus, ResidualBlock, ResNet
from conftest import abstract_init
from jaxvision.models import count_params

EPS = 1e-5  # BatchNorm epsilon




def init_fast(model, x, seed=1):
    """Jitted init with the 'rbg' PRNG, which compiles much faster on CPU than threefry."""
    return jax.jit(lambda r: model.init(r, x, train=False))(jax.random.key(seed, impl="rbg"))


def conv_calls(model, shape, **kw) -> dict:
    """{module path: (kernel_size, strides, kernel_dilation, padding)} of every nn.Conv the forward pass calls."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Conv) and context.method_name == "__call__":
            pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
            seen["/".join(m.path)] = (pair(m.kernel_size), pair(m.strides), pair(m.kernel_dilation), m.padding)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_init(model, shape, **kw)
    return seen


def direct_conv(x, w, stride, dilation, pad):
    """Naive NHWC cross-correlation with symmetric zero padding (PyTorch Conv2d semantics)."""
    k = w.shape[0]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    span = dilation * (k - 1) + 1
    ho = (x.shape[1] - span) // stride + 1
    wo = (x.shape[2] - span) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[-1]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + span:dilation, j * stride:j * stride + span:dilation, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
    return out


# ----------------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (7, 2, 1), (3, 1, 2), (1, 2, 1)])
def test_conv_padding_matches_pytorch(kernel, stride, dilation):
    # Even input + stride 2 is where 'SAME' (pads 0 before, 1 after) and PyTorch (pads k//2 both sides) differ.
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)))
    layer = ConvNormAct(4, kernel, stride, dilation, activation=None)
    v = init_fast(layer, x)
    y = layer.apply(v, x, train=False)
    w = np.asarray(v["params"]["conv"]["kernel"])
    expected = direct_conv(x, w, stride, dilation, dilation * (kernel - 1) // 2) / np.sqrt(1 + EPS)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)


def test_group_norm_uses_gcd_groups():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 8))
    layer = ConvNormAct(48, 1, norm="group", activation=None)  # 32 does not divide 48 -> gcd = 16 groups
    v = init_fast(layer, x)
    assert "batch_stats" not in v
    y = np.asarray(layer.apply(v, x, train=False))
    z = np.einsum("bhwc,co->bhwo", np.asarray(x), np.asarray(v["params"]["conv"]["kernel"][0, 0]))
    g = z.reshape(2, 5, 5, 16, 3)
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + EPS)
    np.testing.assert_allclose(y, g.reshape(z.shape), rtol=1e-4, atol=1e-4)


def test_aspp_branches_rates_and_channels():
    aspp = ASPP(channels=16, rates=(2, 3, 5))
    v = abstract_init(aspp, (1, 9, 9, 8))
    p = v["params"]
    assert sorted(p) == ["atrous0", "atrous1", "atrous2", "conv1x1", "pooling", "project"]
    assert p["conv1x1"]["conv"]["kernel"].shape == (1, 1, 8, 16)
    assert all(p[f"atrous{i}"]["conv"]["kernel"].shape == (3, 3, 8, 16) for i in range(3))
    assert p["project"]["conv"]["kernel"].shape == (1, 1, 16 * 5, 16)  # 1x1 + 3 rates + pooling
    dil = {k: c[2] for k, c in conv_calls(aspp, (1, 9, 9, 8)).items()}
    assert dil == {"conv1x1/conv": (1, 1), "atrous0/conv": (2, 2), "atrous1/conv": (3, 3),
                   "atrous2/conv": (5, 5), "pooling/proj/conv": (1, 1), "project/conv": (1, 1)}
    out = jax.eval_shape(lambda v: aspp.apply(v, jnp.zeros((2, 9, 9, 8)), train=False), v)
    assert out.shape == (2, 9, 9, 16)


def test_image_pooling_is_projection_of_the_mean():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 6)) + 0.5
    pool = ImagePooling(channels=4)
    v = init_fast(pool, x)
    # Non-trivial norm parameters and statistics, so a missing or misplaced norm cannot pass.
    r = np.random.default_rng(0)
    bn = {"scale": r.uniform(0.5, 2, 4), "bias": np.array([3.0, -30.0, 0.5, -0.5])}  # channel 1 cut by the ReLU
    stats = {"mean": r.normal(size=4), "var": r.uniform(0.5, 2, 4)}
    v = {"params": {"proj": {"conv": v["params"]["proj"]["conv"], "norm": bn}},
         "batch_stats": {"proj": {"norm": stats}}}
    y = np.asarray(pool.apply(v, x, train=False))
    w = np.asarray(v["params"]["proj"]["conv"]["kernel"][0, 0])
    mean = np.asarray(x).mean(axis=(1, 2))
    expected = (mean @ w - stats["mean"]) / np.sqrt(stats["var"] + EPS) * bn["scale"] + bn["bias"]
    expected = np.maximum(expected, 0)
    assert (expected > 0).any() and (expected == 0).any()
    np.testing.assert_allclose(y, np.broadcast_to(expected[:, None, None], y.shape), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- ResNet

@pytest.mark.parametrize("name,expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                           ("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_resnet_param_counts_match_torchvision(name, expected):
    v = abstract_init(models.create(name, num_classes=1000))
    assert count_params(v["params"]) == expected


@pytest.mark.parametrize("output_stride,deep", [(32, (4, 2)), (16, (4, 4)), (8, (8, 8))])
def test_resnet_feature_shapes(output_stride, deep):
    model = models.create("resnet18", num_classes=None, output_stride=output_stride)
    v = abstract_init(model)
    feats = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False, features=True), v)
    assert {k: f.shape for k, f in feats.items()} == {
        4: (2, 16, 16, 64), 8: (2, 8, 8, 128), 16: (2, deep[0], deep[0], 256), 32: (2, deep[1], deep[1], 512)}


def test_resnet50_feature_channels():
    model = models.create("resnet50", num_classes=0, output_stride=16)
    v = abstract_init(model)
    feats = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3)), train=False, features=True), v)
    assert {k: f.shape[1:] for k, f in feats.items()} == {
        4: (16, 16, 256), 8: (8, 8, 512), 16: (4, 4, 1024), 32: (4, 4, 2048)}


def test_dilations_at_output_stride_8():
    # torchvision replace_stride_with_dilation=(False, True, True): layer3 and layer4 lose their stride; the
    # first block of each keeps the previous dilation (1 for layer3, 2 for layer4).
    calls = conv_calls(models.create("resnet50", num_classes=None, output_stride=8), (1, 64, 64, 3))
    expected = {"layer2_0/conv2": (2, 1), "layer3_0/conv2": (1, 1), "layer3_1/conv2": (1, 2),
                "layer3_5/conv2": (1, 2), "layer4_0/conv2": (1, 2), "layer4_1/conv2": (1, 4),
                "layer4_2/conv2": (1, 4), "layer3_0/downsample": (1, 1), "layer4_0/downsample": (1, 1)}
    for path, (stride, dilation) in expected.items():
        kernel, strides, dil, padding = calls[path + "/conv"]
        assert strides == (stride, stride) and dil == (dilation, dilation), path
        assert padding == ((dilation * (kernel[0] - 1) // 2,) * 2,) * 2, path
    assert all(c[2] == (1, 1) for p, c in calls.items() if c[0] == (1, 1))
    basic = conv_calls(models.create("resnet18", num_classes=None, output_stride=8), (1, 64, 64, 3))
    assert [basic[f"layer4_{j}/conv{k}/conv"][2][0] for j in (0, 1) for k in (1, 2)] == [2, 2, 4, 4]


@pytest.fixture(scope="module")
def resnet18():
    """ResNet-18 with a 10-class head, its initial variables and a 2x32x32 batch."""
    model = models.create("resnet18", num_classes=10)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
    return model, init_fast(model, x), x


def test_zero_init_residual_every_block_starts_as_relu_shortcut(resnet18):
    _, v, x = resnet18
    model = models.create("resnet18", num_classes=10, output_stride=16)  # same params, dilated layer4
    keep = lambda m, method: isinstance(m, ResidualBlock) or m.name in ("downsample", "stem")  # noqa: E731
    _, state = model.apply(v, x, train=False, features=True, capture_intermediates=keep, mutable=["intermediates"])
    inter = state["intermediates"]
    prev = nn.max_pool(inter["stem"]["__call__"][0], (3, 3), (2, 2), ((1, 1), (1, 1)))
    blocks = [k for k in inter if k.startswith("layer")]
    assert len(blocks) == 8
    for key in blocks:  # dict order = call order
        out = inter[key]["__call__"][0]
        shortcut = inter[key]["downsample"]["__call__"][0] if "downsample" in inter[key] else prev
        np.testing.assert_allclose(np.asarray(out), np.maximum(np.asarray(shortcut), 0), atol=1e-6, err_msg=key)
        prev = out
    # One shortcut by hand: layer2_0's 1x1 stride-2 conv of layer1's output, then BatchNorm at init (x / sqrt(1+eps)).
    w = np.asarray(v["params"]["layer2_0"]["downsample"]["conv"]["kernel"])
    np.testing.assert_allclose(np.asarray(inter["layer2_0"]["downsample"]["__call__"][0]),
                               direct_conv(np.asarray(inter["layer1_1"]["__call__"][0]), w, 2, 1, 0) / np.sqrt(1 + EPS),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride,dilation,width_in", [(1, 1, 16), (2, 1, 8), (1, 2, 8)])
def test_zero_init_bottleneck_starts_as_relu_shortcut(stride, dilation, width_in):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, width_in))
    block = ResidualBlock(4, "bottleneck", stride, dilation)  # 16 output channels
    v = init_fast(block, x)
    y = np.asarray(block.apply(v, x, train=False))
    if "downsample" in v["params"]:
        w = np.asarray(v["params"]["downsample"]["conv"]["kernel"])
        shortcut = direct_conv(np.asarray(x), w, stride, 1, 0) / np.sqrt(1 + EPS)
    else:
        shortcut = np.asarray(x)
    assert ("downsample" in v["params"]) == (stride != 1 or width_in != 16)
    np.testing.assert_allclose(y, np.maximum(shortcut, 0), rtol=1e-4, atol=1e-5)
    assert np.abs(y).sum() > 0
    unzeroed = ResidualBlock(4, "bottleneck", stride, dilation, zero_init_residual=False)
    assert not np.allclose(unzeroed.apply(init_fast(unzeroed, x), x, train=False), y)


def test_batch_stats_update_only_when_training(resnet18):
    model, v, x = resnet18
    apply = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=["batch_stats"]), static_argnums=2)
    logits, frozen = apply(v, x, False)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), frozen["batch_stats"],
                                            v["batch_stats"])))
    _, updated = apply(v, x, True)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updated["batch_stats"], v["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # Stem running stats = 0.9 * (0, 1) + 0.1 * batch (mean, biased var) of the stem conv (7x7/2, padding 3) by hand.
    conv = direct_conv(np.asarray(x), np.asarray(v["params"]["stem"]["conv"]["kernel"]), 2, 1, 3)
    np.testing.assert_allclose(np.asarray(updated["batch_stats"]["stem"]["norm"]["mean"]),
                               0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(updated["batch_stats"]["stem"]["norm"]["var"]),
                               0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4)


def test_resnet_rejects_bad_options():
    with pytest.raises(ValueError, match="output_stride 4"):
        ResNet(depth=18, output_stride=4)
    with pytest.raises(ValueError, match="depth 20"):
        ResNet(depth=20)
    with pytest.raises(ValueError, match="norm 'layer'"):
        ResNet(depth=18, norm="layer")


# ----------------------------------------------------------------------------------------------- DeepLabv3+

def deeplab_resnet18_params() -> int:
    """DeepLabv3+ / ResNet-18 / 19 classes + depth, counted by hand."""
    encoder = 11_689_512 - (512 * 1000 + 1000)  # torchvision resnet18 without fc
    cna = lambda cin, cout, k: k * k * cin * cout + 2 * cout  # noqa: E731  conv (no bias) + norm
    aspp = cna(512, 256, 1) + 3 * cna(512, 256, 3) + cna(512, 256, 1) + cna(5 * 256, 256, 1)
    decoder = cna(64, 48, 1) + cna(256 + 48, 256, 3) + cna(256, 256, 3)
    heads = (256 * 19 + 19) + (256 + 1)
    return encoder + aspp + decoder + heads


def test_deeplab_param_count_by_hand():
    v = abstract_init(models.create("deeplabv3plus", encoder="resnet18"))
    assert count_params(v["params"]) == deeplab_resnet18_params() == 16_607_924


@pytest.fixture(scope="module")
def deeplab18():
    model = models.create("deeplabv3plus", encoder="resnet18")
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    return model, init_fast(model, x), x


def test_deeplab_outputs(deeplab18):
    model, v, x = deeplab18
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)
    assert set(out) == {"semseg", "depth"}
    assert out["semseg"].shape == (2, 64, 64, 19) and out["semseg"].dtype == jnp.float32
    assert out["depth"].shape == (2, 64, 64) and out["depth"].dtype == jnp.float32
    depth = np.asarray(out["depth"])
    assert (depth > 0).all() and np.all(np.abs(np.log(depth / 10.0)) < 0.5)  # initialised at ~10 m
    np.testing.assert_allclose(v["params"]["heads"]["head_depth"]["bias"], [np.log(10.0)], rtol=1e-6)


def test_deeplab_train_step_updates_batch_stats(deeplab18):
    model, v, x = deeplab18
    out, updated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                    rngs={"dropout": jax.random.PRNGKey(2)}))(v, x)
    assert out["semseg"].shape == (2, 64, 64, 19)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updated["batch_stats"], v["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_deeplab_bfloat16_outputs_float32(deeplab18):
    _, v, x = deeplab18
    model = models.create("deeplabv3plus", encoder="resnet18", dtype=jnp.bfloat16)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)  # same float32 params
    assert out["semseg"].dtype == jnp.float32 and out["depth"].dtype == jnp.float32
    assert out["semseg"].shape == (2, 64, 64, 19) and (np.asarray(out["depth"]) > 0).all()
    ref = deeplab18[0].apply(v, x, train=False)
    np.testing.assert_allclose(np.log(out["depth"]), np.log(ref["depth"]), atol=0.05)


def test_deeplab_aspp_rates_follow_output_stride():
    for output_stride, rates in [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))]:
        model = models.create("deeplabv3plus", encoder="resnet18", output_stride=output_stride)
        calls = conv_calls(model, (1, 64, 64, 3))
        got = tuple(calls[f"context_decoder/aspp/atrous{i}/conv"][2][0] for i in range(3))
        assert got == rates, output_stride
    with pytest.raises(ValueError, match="aspp_rates"):
        models.create("deeplabv3plus", output_stride=32, aspp_rates=(3, 6, 9))


def test_deeplab_ablation_variants():
    model = models.create("deeplabv3plus", encoder="resnet18", skip_channels=0, use_aspp=False, norm="group")
    v = abstract_init(model)
    assert "batch_stats" not in v
    cd = v["params"]["context_decoder"]
    assert "skip" not in cd["decoder"] and cd["aspp"]["conv"]["kernel"].shape == (1, 1, 512, 256)
    assert cd["decoder"]["conv0"]["conv"]["kernel"].shape == (3, 3, 256, 256)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 96, 3)), train=False), v)
    assert out["semseg"].shape == (2, 64, 96, 19) and out["depth"].shape == (2, 64, 96)


def test_deeplab_normalises_inside():
    # A model whose input is already ImageNet-standardised would see different features for [0,1] input.
    from jaxvision.models.deeplab import normalize_imagenet
    x = jnp.asarray([[[[0.485, 0.456, 0.406], [0.714, 0.68, 0.631]]]])
    np.testing.assert_allclose(normalize_imagenet(x), [[[[0, 0, 0], [1, 1, 1]]]], atol=1e-5)


# ----------------------------------------------------------------------------------------------- registry

def test_registry_lists_models():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "deeplabv3plus"} <= set(models.list_models())


def test_registry_errors_name_the_culprit():
    with pytest.raises(ValueError, match="unknown model 'resnet7'.*resnet18"):
        models.create("resnet7")
    with pytest.raises(TypeError, match="'widht'"):
        models.create("deeplabv3plus", widht=3)
    with pytest.raises(TypeError, match="'depth'"):  # fixed by the name
        models.create("resnet18", depth=50)
    config = ml_collections.ConfigDict(dict(name="deeplabv3plus", encoder="resnet18", decoder_chanels=128))
    with pytest.raises(ValueError, match="model.decoder_chanels"):
        models.create_from_config(config)
    with pytest.raises(ValueError, match="'name'"):
        models.create_from_config(ml_collections.ConfigDict(dict(encoder="resnet18")))
    with pytest.raises(ValueError, match="model.tasks"):
        models.create("deeplabv3plus", tasks=(("normals", 3),))
    with pytest.raises(ValueError, match="model.encoder 'vgg16'"):
        models.create("deeplabv3plus", encoder="vgg16")


def test_create_from_config():
    config = ml_collections.ConfigDict(dict(name="deeplabv3plus", encoder="resnet50", output_stride=8,
                                            aspp_rates=[6, 12, 18], tasks=[["semseg", 7], ["depth", 1]]))
    model = models.create_from_config(config, dtype=jnp.bfloat16)
    assert isinstance(model, DeepLabV3Plus)
    assert (model.encoder, model.output_stride, model.dtype) == ("resnet50", 8, jnp.bfloat16)
    assert model.tasks == (("semseg", 7), ("depth", 1)) and model.aspp_rates == (6, 12, 18)
