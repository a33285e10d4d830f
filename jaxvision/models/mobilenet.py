"""MobileNetV2 (Sandler et al. 2018) in the torchvision layout, with a width multiplier, features and dilation.

Parameter names map one to one to torchvision's: `stem` (features.0), `block{i}` (features.{i}, i = 1..17)
with `expand` (conv.0, absent when t = 1), `depthwise` and `project` (the last conv + BN), `last_conv`
(features.18) and `head` (classifier.1); each of these holds `conv|norm`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, check_norm, make_divisible
from jaxvision.layers.se import SqueezeExcite
from jaxvision.layers.stochastic_depth import StochasticDepth
from jaxvision.models.registry import register

# Inverted residual stages (expansion t, channels c, blocks n, stride s) of torchvision's MobileNetV2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
OUTPUT_STRIDES = (8, 16, 32)


class InvertedResidual(nn.Module):
    """1x1 expansion by `expansion` (skipped when 1) -> k x k depthwise with the stride and dilation -> optional
    squeeze-and-excitation (input channels // 4, same activation) -> linear 1x1 projection; `activation` after
    the first two. Identity shortcut, with stochastic depth `drop_path_rate`, when the stride is 1 and the width
    is kept. Defaults are MobileNetV2's (ReLU6, 3x3, no SE); EfficientNet's MBConv changes them."""

    features: int
    expansion: int
    stride: int = 1
    dilation: int = 1
    kernel_size: int = 3
    activation: Callable = nn.relu6
    squeeze_excite: bool = False
    drop_path_rate: float = 0.0
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        channels = x.shape[-1]
        hidden = make_divisible(channels * self.expansion)  # torchvision's adjust_channels(in, expand_ratio)
        y = x
        if self.expansion != 1:
            y = ConvNormAct(hidden, 1, activation=self.activation, name="expand", **kw)(y, train)
        y = ConvNormAct(hidden, self.kernel_size, self.stride, self.dilation, groups=hidden,
                        activation=self.activation, name="depthwise", **kw)(y, train)
        if self.squeeze_excite:
            y = SqueezeExcite(squeeze_channels=max(1, channels // 4), activation=self.activation, dtype=self.dtype,
                              name="se")(y)
        y = ConvNormAct(self.features, 1, activation=None, name="project", **kw)(y, train)
        if self.stride == 1 and channels == self.features:
            return x + StochasticDepth(self.drop_path_rate, name="drop_path")(y, deterministic=not train)
        return y


@register("mobilenet_v2_140", width_multiplier=1.4)
@register("mobilenet_v2_050", width_multiplier=0.5)
@register("mobilenet_v2")
class MobileNetV2(nn.Module):
    """torchvision MobileNetV2. `num_classes` None or 0: no classifier head (dropout 0.2 before it). `norm_eps`:
    every norm's epsilon.

    `output_stride` 16 / 8 trades the strides from that point on for dilation as DeepLab's MobileNetV2 does:
    a block that would stride keeps the running dilation and multiplies it for the blocks after it.
    """

    width_multiplier: float = 1.0
    num_classes: int | None = 1000
    output_stride: int = 32
    dropout: float = 0.2
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.width_multiplier <= 0:
            raise ValueError(f"MobileNetV2 width_multiplier {self.width_multiplier} must be positive")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"MobileNetV2 output_stride {self.output_stride} is unsupported; choose 8, 16 or 32")
        check_norm(self.norm)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        """Logits [B, num_classes] float32 (pooled features without a head), or with `features=True` the dict
        {4, 8, 16, 32} -> output of the last block at that nominal stride (24, 32, 96, 320 channels at width 1;
        timm's features_only convention: the stride-32 map is the last block's, not the 1x1 1280-channel conv's)."""
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        w = self.width_multiplier
        x = x.astype(self.dtype)
        x = ConvNormAct(make_divisible(32 * w), 3, 2, activation=nn.relu6, name="stem", **kw)(x, train)
        stride, dilation, index, feats = 2, 1, 1, {}  # stride and dilation reached so far
        for t, c, n, s in STAGES:
            for j in range(n):
                block_stride, block_dilation = (s if j == 0 else 1), dilation
                if stride * block_stride > self.output_stride:
                    block_stride, dilation = 1, dilation * block_stride
                stride *= block_stride
                x = InvertedResidual(make_divisible(c * w), t, block_stride, block_dilation,
                                     name=f"block{index}", **kw)(x, train)
                index += 1
            feats[stride * dilation] = x  # keyed by nominal stride; the last stage at a stride wins
        if features:
            return {k: feats[k] for k in (4, 8, 16, 32)}
        x = ConvNormAct(make_divisible(1280 * max(1.0, w)), 1, activation=nn.relu6, name="last_conv", **kw)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.Dense(self.num_classes, dtype=self.dtype, name="head",
                         kernel_init=nn.initializers.normal(0.01))(x)
        return x.astype(jnp.float32)
