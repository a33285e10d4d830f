"""Backbone zoo: ResNeXt, SE-ResNet, MobileNetV2 counts and shapes, squeeze-and-excitation, `jaxvision models`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.cli import run
from jaxvision.layers import SqueezeExcite
from jaxvision.models import MobileNetV2, ResNet
from conftest import abstract_features, abstract_init, n_params





# torchvision counts (resnext50_32x4d, mobilenet_v2) and timm's 'seresnet50' (SE 1x1 convs with bias, C -> C/16 -> C).
@pytest.mark.parametrize("name,expected", [("resnext50_32x4d", 25_028_904), ("se_resnet50", 28_088_024),
                                           ("mobilenet_v2", 3_504_872)])
def test_param_counts_match_reference(name, expected):
    assert n_params(abstract_init(models.create(name, num_classes=1000))["params"]) == expected


# ----------------------------------------------------------------------------------------------- SE

def test_squeeze_excite_matches_numpy():
    x = jnp.full((1, 2, 3, 4), 0.5).at[0, 0, 0].set(jnp.asarray([1.0, -2.0, 3.0, 0.25]))
    se = SqueezeExcite(squeeze_channels=2)
    v = jax.eval_shape(lambda: se.init(jax.random.PRNGKey(0), x))
    assert jax.tree.map(jnp.shape, v["params"]) == {"fc1": {"kernel": (4, 2), "bias": (2,)},
                                                    "fc2": {"kernel": (2, 4), "bias": (4,)}}
    r = np.random.default_rng(0)
    p = {"fc1": {"kernel": r.normal(size=(4, 2)), "bias": np.array([0.1, -5.0])},  # unit 1 cut by the ReLU
         "fc2": {"kernel": r.normal(size=(2, 4)), "bias": r.normal(size=4)}}
    y = np.asarray(se.apply({"params": jax.tree.map(jnp.asarray, p)}, x))
    mean = np.asarray(x).mean(axis=(1, 2))
    hidden = np.maximum(mean @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    assert hidden[0, 1] == 0 and hidden[0, 0] > 0
    gate = 1 / (1 + np.exp(-(hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"])))
    np.testing.assert_allclose(y, np.asarray(x) * gate[:, None, None], rtol=1e-5, atol=1e-6)


def test_squeeze_excite_default_reduction_and_errors():
    v = jax.eval_shape(lambda: SqueezeExcite().init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 64))))
    assert v["params"]["fc1"]["kernel"].shape == (64, 4)
    with pytest.raises(ValueError, match="squeeze_channels -1"):
        SqueezeExcite(squeeze_channels=-1).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 8)))


# ----------------------------------------------------------------------------------------------- ResNeXt / SE-ResNet

def test_resnext_grouped_conv_kernels():
    p = abstract_init(models.create("resnext50_32x4d"))["params"]
    # width = int(planes * 4 / 64) * 32: 128 in layer1, 1024 in layer4; each group sees width / 32 channels.
    assert p["layer1_0"]["conv1"]["conv"]["kernel"].shape == (1, 1, 64, 128)
    assert p["layer1_0"]["conv2"]["conv"]["kernel"].shape == (3, 3, 128 // 32, 128)
    assert p["layer4_2"]["conv2"]["conv"]["kernel"].shape == (3, 3, 1024 // 32, 1024)
    assert p["layer4_2"]["conv3"]["conv"]["kernel"].shape == (1, 1, 1024, 2048)


def test_se_resnet_blocks_and_features():
    model = models.create("se_resnet50", num_classes=None, output_stride=16)
    p = abstract_init(model)["params"]
    assert p["layer1_0"]["se"]["fc1"]["kernel"].shape == (256, 16)
    assert p["layer4_2"]["se"]["fc2"]["kernel"].shape == (128, 2048)
    assert all("se" in p[k] for k in p if k.startswith("layer"))
    assert abstract_features(model) == {4: (1, 16, 16, 256), 8: (1, 8, 8, 512), 16: (1, 4, 4, 1024),
                                        32: (1, 4, 4, 2048)}
    assert abstract_init(models.create("se_resnet18"))["params"]["layer1_0"]["se"]["fc1"]["kernel"].shape == (64, 4)


def test_resnext_options_need_bottlenecks():
    with pytest.raises(ValueError, match="groups 32"):
        ResNet(depth=18, groups=32)
    with pytest.raises(ValueError, match="width_per_group 0"):
        ResNet(depth=50, width_per_group=0)


# ----------------------------------------------------------------------------------------------- MobileNetV2

@pytest.mark.parametrize("output_stride,sizes", [(32, (16, 8, 4, 2)), (16, (16, 8, 4, 4)), (8, (16, 8, 8, 8))])
def test_mobilenet_v2_feature_shapes(output_stride, sizes):
    feats = abstract_features(models.create("mobilenet_v2", num_classes=None, output_stride=output_stride))
    channels = (24, 32, 96, 320)  # timm's features_only: the stride-32 map is the last block's, before the 1x1 conv
    assert feats == {s: (1, n, n, c) for s, n, c in zip((4, 8, 16, 32), sizes, channels)}


def test_mobilenet_v2_dilation_at_output_stride_8():
    seen = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Conv) and m.kernel_size == (3, 3):
            seen[m.path[0]] = (m.strides, m.kernel_dilation)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_init(models.create("mobilenet_v2", num_classes=None, output_stride=8))
    strides = {k: v[0] for k, v in seen.items() if v[0] != 1}
    assert strides == {"stem": 2, "block2": 2, "block4": 2}  # block7 (stride 16) and block14 (32) lose theirs
    dilations = [seen[f"block{i}"][1] for i in range(1, 18)]
    # DeepLab: the block giving up its stride keeps the running dilation; the blocks after it use the product.
    assert dilations == [1] * 7 + [2] * 7 + [4] * 3


def test_mobilenet_v2_layout_and_width_multiplier():
    p = abstract_init(models.create("mobilenet_v2"))["params"]
    assert sorted(p["block1"]) == ["depthwise", "project"]  # t = 1: no expansion conv
    assert p["block1"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 32)
    assert p["block2"]["expand"]["conv"]["kernel"].shape == (1, 1, 16, 96)
    assert p["last_conv"]["conv"]["kernel"].shape == (1, 1, 320, 1280)
    assert p["head"]["kernel"].shape == (1280, 1000)
    assert len([k for k in p if k.startswith("block")]) == 17
    narrow = abstract_init(models.create("mobilenet_v2_050", num_classes=10))["params"]
    assert narrow["stem"]["conv"]["kernel"].shape == (3, 3, 3, 16)  # _make_divisible(32 * 0.5, 8)
    assert narrow["block1"]["project"]["conv"]["kernel"].shape == (1, 1, 16, 8)
    assert narrow["last_conv"]["conv"]["kernel"].shape == (1, 1, 160, 1280)  # never narrower than 1280
    wide = abstract_init(models.create("mobilenet_v2_140", num_classes=None))["params"]
    assert wide["last_conv"]["conv"]["kernel"].shape == (1, 1, 448, 1792) and "head" not in wide


def test_mobilenet_v2_logits_and_errors():
    model = models.create("mobilenet_v2", num_classes=7)
    v = abstract_init(model)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=True, mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.PRNGKey(1)})[0], v)
    assert out.shape == (2, 7) and out.dtype == jnp.float32
    with pytest.raises(ValueError, match="output_stride 4"):
        MobileNetV2(output_stride=4)
    with pytest.raises(ValueError, match="width_multiplier 0"):
        MobileNetV2(width_multiplier=0)


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_models_lists_parameter_counts(capsys):
    assert run(["models"]) == 0
    rows = dict(line.split() for line in capsys.readouterr().out.strip().splitlines()[1:])
    assert rows["resnet50"] == "25,557,032" and rows["mobilenet_v2"] == "3,504,872"
    assert rows["resnext50_32x4d"] == "25,028,904"
    assert run(["models", "--filter", "mobilenet"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert names == ["mobilenet_v2", "mobilenet_v2_050", "mobilenet_v2_140"]


def test_cli_models_marks_a_failing_init(capsys, monkeypatch):
    from jaxvision.models import registry

    def broken(**kwargs):
        raise RuntimeError("needs a bigger input")

    monkeypatch.setitem(registry._REGISTRY, "broken_net", broken)
    assert run(["models", "--filter", "broken"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[1].split() == ["broken_net", "-"] and "Traceback" not in out
