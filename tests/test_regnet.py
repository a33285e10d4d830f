"""RegNetX / RegNetY: torchvision parameter counts, generated widths, layout, features / dilation, errors, CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.cli import run
from jaxvision.models.regnet import RegNet, block_params
from jaxvision.models.resnet import dilated_stages
from conftest import abstract_features, abstract_init
from jaxvision.models import count_params

# torchvision.models.regnet_* (1000 classes, parameters only).
COUNTS = {"regnet_x_400mf": 5_495_976, "regnet_y_400mf": 4_344_144, "regnet_x_800mf": 7_259_656,
          "regnet_y_800mf": 6_432_512}


@pytest.mark.parametrize("name,expected", COUNTS.items())
def test_param_counts_match_torchvision(name, expected):
    assert count_params(abstract_init(models.create(name, num_classes=1000))["params"]) == expected


# (depth, w_0, w_a, w_m, group_width) -> per stage (width, depth, group width), as torchvision / pycls generate them.
@pytest.mark.parametrize("settings,widths,depths,group_widths", [
    ((22, 24, 24.48, 2.54, 16), (32, 64, 160, 400), (1, 2, 7, 12), (16, 16, 16, 16)),
    ((16, 48, 27.89, 2.09, 8), (48, 104, 208, 440), (1, 3, 6, 6), (8, 8, 8, 8)),
    ((16, 56, 35.73, 2.28, 16), (64, 128, 288, 672), (1, 3, 7, 5), (16, 16, 16, 16)),
    ((14, 56, 38.84, 2.4, 16), (64, 144, 320, 784), (1, 3, 8, 2), (16, 16, 16, 16)),
    ((4, 8, 12, 1.5, 16), (8, 16, 32, 48), (1, 1, 1, 1), (8, 16, 16, 16)),  # group width capped, widths rounded up
])
def test_block_params(settings, widths, depths, group_widths):
    assert [tuple(s) for s in zip(*block_params(*settings))] == [widths, depths, group_widths]


def test_layout():
    p = abstract_init(models.create("regnet_x_400mf"))["params"]
    assert p["stem"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert sorted(p["block1_0"]) == ["a", "b", "c", "proj"]
    assert sorted(p["block3_1"]) == ["a", "b", "c"]  # stride 1, same width: identity shortcut
    assert len([k for k in p if k.startswith("block4_")]) == 12
    assert p["block2_0"]["b"]["conv"]["kernel"].shape == (3, 3, 16, 64)  # 64 / 16 = 4 groups of 16 channels
    assert p["block4_11"]["c"]["conv"]["kernel"].shape == (1, 1, 400, 400)
    assert p["head"]["kernel"].shape == (400, 1000)
    y = abstract_init(models.create("regnet_y_400mf", num_classes=None))["params"]
    assert "head" not in y and all("se" in y[k] for k in y if k.startswith("block"))
    # squeeze = round(0.25 * block input width): 32 (stem) for block1_0, 48 for block2_0, 104 for block2_1.
    assert y["block1_0"]["se"]["fc1"]["kernel"].shape == (48, 8)
    assert y["block2_0"]["se"]["fc1"]["kernel"].shape == (104, 12)
    assert y["block2_1"]["se"]["fc2"]["kernel"].shape == (26, 104)


@pytest.mark.parametrize("output_stride,sizes", [(32, (16, 8, 4, 2)), (16, (16, 8, 4, 4)), (8, (16, 8, 8, 8))])
def test_feature_shapes(output_stride, sizes):
    feats = abstract_features(models.create("regnet_y_400mf", num_classes=None, output_stride=output_stride))
    assert feats == {s: (1, n, n, c) for s, n, c in zip((4, 8, 16, 32), sizes, (48, 104, 208, 440))}


def test_dilation_at_output_stride_8():
    seen = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Conv) and m.path[-2] in ("b", "proj"):
            seen["/".join(m.path[:-1])] = (m.strides, m.kernel_dilation)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_init(models.create("regnet_x_400mf", num_classes=None, output_stride=8))
    assert seen["block2_0/b"] == seen["block2_0/proj"] == (2, 1)
    # As torchvision's ResNet: the first block of a dilated stage keeps the previous dilation.
    assert seen["block3_0/b"] == seen["block3_0/proj"] == (1, 1) and seen["block3_6/b"] == (1, 2)
    assert seen["block4_0/b"] == (1, 2) and seen["block4_11/b"] == (1, 4)
    # The shared bookkeeping: stages entered at stride 2 (RegNet) or 4 (ResNet after its max pool).
    assert dilated_stages((2, 2, 2, 2), 16, 2) == [(2, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)]
    assert dilated_stages((1, 2, 2, 2), 8, 4) == [(1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)]


def test_group_norm_runs():
    model = RegNet(depth=5, w_0=8, w_a=8, w_m=1.5, group_width=8, se_ratio=0.25, norm="group", num_groups=4,
                   num_classes=3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    v = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=False))(x)
    assert "batch_stats" not in v and "scale" in v["params"]["block3_1"]["c"]["norm"]
    out = jax.jit(lambda v, x: model.apply(v, x, train=True))(v, x)
    assert out.shape == (2, 3) and out.dtype == jnp.float32 and np.all(np.isfinite(out))


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="output_stride 4"):
        models.create("regnet_x_400mf", output_stride=4)
    with pytest.raises(ValueError, match="norm 'layer'"):
        models.create("regnet_y_400mf", norm="layer")
    with pytest.raises(ValueError, match="w_m 1.0"):
        RegNet(w_m=1.0)
    with pytest.raises(ValueError, match="w_0 20"):
        RegNet(w_0=20)
    with pytest.raises(ValueError, match="se_ratio -0.5"):
        RegNet(se_ratio=-0.5)
    with pytest.raises(ValueError, match="give 1 stages"):
        RegNet(depth=1)
    with pytest.raises(ValueError, match="group_width 0"):
        block_params(22, 24, 24.48, 2.54, 0)
    assert "w_a" not in models.model_options("regnet_x_400mf")


def test_cli_models_lists_regnets(capsys):
    assert run(["models", "--filter", "regnet"]) == 0
    rows = dict(line.split() for line in capsys.readouterr().out.strip().splitlines()[1:])
    assert rows == {name: f"{count:,}" for name, count in COUNTS.items()}
