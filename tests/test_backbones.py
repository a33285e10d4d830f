"""Backbone zoo: ResNeXt, SE-ResNet, MobileNetV2 counts and shapes, squeeze-and-excitation, `jaxvision models`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.cli import run
from jaxvision.layers import ConvNormAct, SqueezeExcite, make_divisible
from jaxvision.models import MobileNetV2, ResNet
from conftest import abstract_features, abstract_init
from jaxvision.models import count_params





def se_resnet_params(resnet: int, blocks: tuple[int, ...], expansion: int) -> int:
    """A torchvision ResNet's count plus timm's SE per block: 1x1 convs with bias C -> r -> C, r = max(8, C / 16)."""
    se = lambda c: 2 * c * max(8, c // 16) + max(8, c // 16) + c  # noqa: E731
    return resnet + sum(n * se(w * expansion) for n, w in zip(blocks, (64, 128, 256, 512)))


# torchvision counts (resnext50_32x4d, mobilenet_v2) and timm's 'seresnet18/34/50' (SE 1x1 convs with bias,
# C -> make_divisible(C / 16, 8, round_limit=0) -> C: 8, not 4, channels for C = 64).
@pytest.mark.parametrize("name,expected", [
    ("resnext50_32x4d", 25_028_904), ("mobilenet_v2", 3_504_872), ("se_resnet50", 28_088_024),
    ("se_resnet18", 11_779_624), ("se_resnet34", 21_960_416)])
def test_param_counts_match_reference(name, expected):
    assert count_params(abstract_init(models.create(name, num_classes=1000))["params"]) == expected


def test_se_resnet_counts_by_hand():
    assert se_resnet_params(11_689_512, (2, 2, 2, 2), 1) == 11_779_624
    assert se_resnet_params(21_797_672, (3, 4, 6, 3), 1) == 21_960_416
    assert se_resnet_params(25_557_032, (3, 4, 6, 3), 4) == 28_088_024


def test_make_divisible_round_limit():
    assert [make_divisible(v) for v in (4, 12, 19, 36)] == [8, 16, 24, 40]  # 19 -> 16 is below 90%: 24
    assert [make_divisible(v, round_limit=0) for v in (4, 12, 19, 36)] == [8, 16, 16, 40]
    assert make_divisible(24, 16) == 32 and make_divisible(20, 16, round_limit=0) == 16


# ----------------------------------------------------------------------------------------------- norm epsilon

def test_norm_eps_reaches_batch_and_group_norm():
    # A 1x1 identity conv on channels of +-1 (mean 0, variance 1 per batch channel and per group): both norms give
    # x / sqrt(1 + eps), BatchNorm at init (running mean 0, variance 1) and GroupNorm from the sample itself.
    x = jnp.asarray(np.tile([[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, -1.0]], (1, 2, 1)).reshape(1, 2, 2, 4))
    for norm in ("batch", "group"):
        layer = ConvNormAct(4, 1, norm=norm, num_groups=2, norm_eps=0.25, activation=None)
        v = layer.init(jax.random.PRNGKey(0), x, train=False)
        v = {**v, "params": {**v["params"], "conv": {"kernel": jnp.eye(4)[None, None]}}}
        np.testing.assert_allclose(layer.apply(v, x, train=False), x / np.sqrt(1.25), rtol=1e-6, err_msg=norm)


def norm_epsilons(name: str, **kw) -> set:
    """The epsilons of all the norms model `name` calls."""
    seen = set()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, (nn.BatchNorm, nn.GroupNorm)):
            seen.add(context.module.epsilon)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_init(models.create(name, num_classes=None, **kw))
    return seen


@pytest.mark.parametrize("name,default", [("se_resnet18", 1e-5), ("mobilenet_v2", 1e-5), ("efficientnet_b0", 1e-5),
                                          ("regnet_y_400mf", 1e-5)])
def test_models_pass_norm_eps_to_every_norm(name, default):
    assert norm_epsilons(name) == {default}  # torchvision's and timm's defaults
    assert norm_epsilons(name, norm_eps=0.01) == {0.01}
    assert norm_epsilons(name, norm="group", norm_eps=0.02) == {0.02}


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
    # timm's squeeze width make_divisible(C / 16, 8, round_limit=0): at least 8 channels.
    assert abstract_init(models.create("se_resnet18"))["params"]["layer1_0"]["se"]["fc1"]["kernel"].shape == (64, 8)


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
