"""ResNet-18/34/50/101, ResNeXt and SE-ResNet in the torchvision (v1.5) layout, with a features mode and dilation.

Parameter names follow torchvision so weights map one to one: `stem` (conv1 + bn1),
`layer{i}_{j}` (layer{i}.{j}) with `conv{k}/conv|norm` (conv{k} / bn{k}) and `downsample/conv|norm`
(downsample.0 / .1), `head` (fc); an SE block's `se/fc1|fc2` follow timm (se.fc1 / se.fc2), with timm's squeeze
width make_divisible(C / 16, 8, round_limit=0) (at least 8).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, check_norm, make_divisible
from jaxvision.layers.se import SqueezeExcite
from jaxvision.models.registry import register

STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
EXPANSION = {"basic": 1, "bottleneck": 4}
OUTPUT_STRIDES = (8, 16, 32)


def dilated_stages(strides: tuple[int, ...], output_stride: int, stride: int) -> list[tuple[int, int, int]]:
    """torchvision's replace_stride_with_dilation for stages with `strides` entered at `stride`: a stage that would
    pass `output_stride` keeps stride 1 and multiplies the running dilation by its stride. Returns per stage
    (stride, dilation of the first block: the previous one, dilation of the other blocks)."""
    stages, dilation = [], 1
    for s in strides:
        first_dilation = dilation
        if stride * s > output_stride:
            dilation, s = dilation * s, 1
        stride *= s
        stages.append((s, first_dilation, dilation))
    return stages


class ResidualBlock(nn.Module):
    """BasicBlock ('basic': 3x3, 3x3) or Bottleneck ('bottleneck': 1x1, 3x3 with the stride, 1x1 x4).

    Every 3x3 conv uses `dilation`. A 1x1 conv + norm shortcut replaces the identity when the
    stride or the width changes. `zero_init_residual` zeroes the last norm's scale, so the block
    starts as relu(shortcut(x)).

    Bottleneck only: the 3x3 conv has `groups` groups and int(width * width_per_group / 64) * groups
    channels (torchvision's ResNeXt). `se` gates the last norm's output by squeeze-and-excitation
    (timm's squeeze width: C / 16 rounded to a multiple of 8, at least 8) before the residual add.
    """

    width: int
    kind: str = "basic"
    stride: int = 1
    dilation: int = 1
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    zero_init_residual: bool = True
    groups: int = 1
    width_per_group: int = 64
    se: bool = False
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        check_block_options(self.kind, self.groups, self.width_per_group)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        out_features = self.width * EXPANSION[self.kind]
        if self.kind == "basic":
            y = ConvNormAct(self.width, 3, self.stride, self.dilation, name="conv1", **kw)(x, train)
            y = ConvNormAct(out_features, 3, 1, self.dilation, activation=None,
                            zero_init_norm=self.zero_init_residual, name="conv2", **kw)(y, train)
        else:
            inner = int(self.width * self.width_per_group / 64) * self.groups
            y = ConvNormAct(inner, 1, name="conv1", **kw)(x, train)
            y = ConvNormAct(inner, 3, self.stride, self.dilation, self.groups, name="conv2", **kw)(y, train)
            y = ConvNormAct(out_features, 1, activation=None, zero_init_norm=self.zero_init_residual,
                            name="conv3", **kw)(y, train)
        if self.se:
            y = SqueezeExcite(squeeze_channels=make_divisible(out_features / 16, round_limit=0), dtype=self.dtype,
                              name="se")(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:
            shortcut = ConvNormAct(out_features, 1, self.stride, activation=None, name="downsample", **kw)(x, train)
        return nn.relu(y + shortcut)


def check_block_options(kind: str, groups: int, width_per_group: int) -> None:
    """Raises a ValueError naming the bad value: groups/width_per_group other than 1/64 need bottlenecks."""
    if groups < 1 or width_per_group < 1:
        raise ValueError(f"ResNet groups {groups} and width_per_group {width_per_group} must be positive")
    if kind == "basic" and (groups, width_per_group) != (1, 64):
        raise ValueError(f"ResNet groups {groups} / width_per_group {width_per_group} need bottleneck blocks "
                         "(depth 50 or 101); basic blocks take only groups 1 and width_per_group 64")


@register("se_resnet50", depth=50, se=True)
@register("se_resnet34", depth=34, se=True)
@register("se_resnet18", depth=18, se=True)
@register("resnext50_32x4d", depth=50, groups=32, width_per_group=4)
@register("resnet101", depth=101)
@register("resnet50", depth=50)
@register("resnet34", depth=34)
@register("resnet18", depth=18)
class ResNet(nn.Module):
    """torchvision ResNet. `num_classes` None or 0: no classifier head.

    `groups` / `width_per_group` make the bottlenecks ResNeXt's; `se` adds squeeze-and-excitation to every block.
    `norm_eps`: every norm's epsilon.

    `output_stride` 16 / 8 replaces the stride of layer4 / layer3+layer4 by dilation as
    torchvision's `replace_stride_with_dilation` does: the running dilation is multiplied by the
    removed stride and the first block of a dilated stage keeps the previous dilation.
    """

    depth: int = 50
    num_classes: int | None = 1000
    output_stride: int = 32
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    zero_init_residual: bool = True
    groups: int = 1
    width_per_group: int = 64
    se: bool = False
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.depth not in DEPTHS:
            raise ValueError(f"ResNet depth {self.depth} is unknown; choose one of {', '.join(map(str, DEPTHS))}")
        check_block_options(DEPTHS[self.depth][0], self.groups, self.width_per_group)
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"ResNet output_stride {self.output_stride} is unsupported; choose 8, 16 or 32")
        check_norm(self.norm)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        """Logits [B, num_classes] float32 (pooled features without a head), or with `features=True`
        the dict {4: layer1, 8: layer2, 16: layer3, 32: layer4} keyed by nominal stride."""
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        block_kw = dict(kw, zero_init_residual=self.zero_init_residual, groups=self.groups,
                        width_per_group=self.width_per_group, se=self.se)
        kind, blocks = DEPTHS[self.depth]
        x = ConvNormAct(64, 7, 2, name="stem", **kw)(x.astype(self.dtype), train)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        feats = {}
        stages = dilated_stages((1, 2, 2, 2), self.output_stride, 4)
        for i, (width, num_blocks, (stride, first_dilation, dilation)) in enumerate(zip(STAGE_WIDTHS, blocks, stages)):
            for j in range(num_blocks):
                x = ResidualBlock(width, kind, stride if j == 0 else 1, first_dilation if j == 0 else dilation,
                                  name=f"layer{i + 1}_{j}", **block_kw)(x, train)
            feats[4 * 2 ** i] = x
        if features:
            return feats
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes:
            # PyTorch Linear's weight init U(+-1/sqrt(fan_in)); bias zero.
            x = nn.Dense(self.num_classes, dtype=self.dtype, name="head",
                         kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"))(x)
        return x.astype(jnp.float32)
