"""RegNetX / RegNetY (Radosavovic et al. 2020) in the torchvision layout, with a features mode and dilation.

Parameter names map one to one to torchvision's: `stem` (stem.0 / stem.1 as `conv|norm`), `block{i}_{j}`
(trunk_output.block{i}.block{i}-{j}) with `proj` (proj.0 / .1), `a`, `b`, `c` (f.a / f.b / f.c .0 / .1 as
`conv|norm`) and RegNetY's `se/fc1|fc2` (f.se.fc1 / f.se.fc2), `head` (fc).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, check_norm, make_divisible
from jaxvision.layers.se import SqueezeExcite
from jaxvision.models.registry import register
from jaxvision.models.resnet import OUTPUT_STRIDES, dilated_stages

STEM_WIDTH = 32
QUANT = 8  # torchvision's block width quantum


def block_params(depth: int, w_0: int, w_a: float, w_m: float, group_width: int) -> list[tuple[int, int, int]]:
    """torchvision's BlockParams.from_init_params (bottleneck multiplier 1): per stage (width, depth, group width).

    Block j gets width w_0 * w_m ** round(log((w_0 + j * w_a) / w_0) / log(w_m)) rounded to a multiple of 8 (in
    float32, as torch); runs of equal widths form the stages, whose widths are then made divisible by their group
    width (`_adjust_widths_groups_compatibilty`).
    """
    if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0:
        raise ValueError(f"RegNet settings w_0 {w_0}, w_a {w_a}, w_m {w_m} are invalid: need w_a >= 0, w_m > 1 and "
                         "w_0 a positive multiple of 8")
    if depth < 1 or group_width < 1:
        raise ValueError(f"RegNet depth {depth} and group_width {group_width} must be positive")
    f32 = np.float32
    widths_cont = np.arange(depth, dtype=f32) * f32(w_a) + f32(w_0)
    capacity = np.round(np.log(widths_cont / f32(w_0)) / f32(np.log(w_m)))
    widths = (np.round(f32(w_0) * np.power(f32(w_m), capacity) / f32(QUANT)) * QUANT).astype(int).tolist()
    stages = []
    for width in widths:
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    return [(make_divisible(w, min(group_width, w)), d, min(group_width, w)) for w, d in stages]


class ResBottleneckBlock(nn.Module):
    """1x1 conv `a` -> 3x3 conv `b` with the stride, dilation and `features // group_width` groups -> optional
    squeeze-and-excitation (round(se_ratio * input width) channels, ReLU) -> 1x1 conv `c` + norm without activation;
    a 1x1 conv + norm shortcut `proj` when the stride or the width changes; ReLU after the add.
    """

    features: int
    stride: int = 1
    dilation: int = 1
    group_width: int = 1
    se_ratio: float | None = None
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        width_in = x.shape[-1]
        y = ConvNormAct(self.features, 1, name="a", **kw)(x, train)
        y = ConvNormAct(self.features, 3, self.stride, self.dilation, self.features // self.group_width, name="b",
                        **kw)(y, train)
        if self.se_ratio:
            y = SqueezeExcite(squeeze_channels=int(round(self.se_ratio * width_in)), activation=nn.relu,
                              dtype=self.dtype, name="se")(y)
        y = ConvNormAct(self.features, 1, activation=None, name="c", **kw)(y, train)
        shortcut = x
        if self.stride != 1 or width_in != self.features:
            shortcut = ConvNormAct(self.features, 1, self.stride, activation=None, name="proj", **kw)(x, train)
        return nn.relu(y + shortcut)


@register("regnet_y_800mf", depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16, se_ratio=0.25)
@register("regnet_x_800mf", depth=16, w_0=56, w_a=35.73, w_m=2.28, group_width=16)
@register("regnet_y_400mf", depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25)
@register("regnet_x_400mf", depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16)
class RegNet(nn.Module):
    """torchvision RegNet: stem (3x3 stride-2 conv to 32 channels), 4 stages of ResBottleneckBlocks whose widths,
    depths and group widths `block_params` derives from (depth, w_0, w_a, w_m, group_width); `se_ratio` (RegNetY)
    adds squeeze-and-excitation. `num_classes` None or 0: no classifier head. `norm_eps`: every norm's epsilon.

    `output_stride` 16 / 8 replaces the stride of stage 4 / stages 3+4 by dilation as ResNet does.
    """

    depth: int = 22
    w_0: int = 24
    w_a: float = 24.48
    w_m: float = 2.54
    group_width: int = 16
    se_ratio: float | None = None
    num_classes: int | None = 1000
    output_stride: int = 32
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        stages = block_params(self.depth, self.w_0, self.w_a, self.w_m, self.group_width)
        if len(stages) != 4:
            raise ValueError(f"RegNet settings give {len(stages)} stages; the features mode needs 4")
        if self.se_ratio is not None and self.se_ratio < 0:
            raise ValueError(f"RegNet se_ratio {self.se_ratio} must not be negative")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"RegNet output_stride {self.output_stride} is unsupported; choose 8, 16 or 32")
        check_norm(self.norm)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        """Logits [B, num_classes] float32 (pooled features without a head), or with `features=True`
        the dict {4: stage 1, 8: stage 2, 16: stage 3, 32: stage 4} keyed by nominal stride."""
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        x = ConvNormAct(STEM_WIDTH, 3, 2, name="stem", **kw)(x.astype(self.dtype), train)
        stages = block_params(self.depth, self.w_0, self.w_a, self.w_m, self.group_width)
        dilations = dilated_stages((2, 2, 2, 2), self.output_stride, 2)
        feats = {}
        for i, ((width, num_blocks, group_width), (stride, first_dilation, dilation)) in enumerate(
                zip(stages, dilations)):
            for j in range(num_blocks):
                x = ResBottleneckBlock(width, stride if j == 0 else 1, first_dilation if j == 0 else dilation,
                                       group_width, self.se_ratio, name=f"block{i + 1}_{j}", **kw)(x, train)
            feats[4 * 2 ** i] = x
        if features:
            return feats
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes:
            x = nn.Dense(self.num_classes, dtype=self.dtype, name="head", kernel_init=nn.initializers.normal(0.01))(x)
        return x.astype(jnp.float32)
