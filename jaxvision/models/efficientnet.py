"""EfficientNet-B0..B3 (Tan & Le 2019) in the torchvision layout, with features, dilation and stochastic depth.

Parameter names follow torchvision's order: `stem` (features.0), `block{i}` (the MBConv blocks of features.1-7,
numbered 1.. over all stages) with `expand` (absent when the expansion ratio is 1), `depthwise`, `se` (`fc1|fc2`)
and `project`, `last_conv` (features.8) and `head` (classifier.1); the convs hold `conv|norm`.

BatchNorm's epsilon `norm_eps` is 1e-5 as in torchvision's and timm's efficientnet_b0..b3 (1e-3 is EfficientNetV2's and
the TF ports').
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, check_norm, make_divisible
from jaxvision.models.mobilenet import OUTPUT_STRIDES, InvertedResidual
from jaxvision.models.registry import register

# MBConv stages of EfficientNet-B0: (expand ratio, kernel, stride, in channels, out channels, layers).
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
# variant -> (width multiplier, depth multiplier, classifier dropout), as torchvision's efficientnet_b0..b3.
VARIANTS = {"b0": (1.0, 1.0, 0.2), "b1": (1.0, 1.1, 0.2), "b2": (1.1, 1.2, 0.3), "b3": (1.2, 1.4, 0.3)}


class MBConv(InvertedResidual):
    """EfficientNet's inverted residual: SiLU and squeeze-and-excitation, k x k depthwise."""

    activation: Callable = nn.silu
    squeeze_excite: bool = True
    norm_eps: float = 1e-5


@register("efficientnet_b3", variant="b3")
@register("efficientnet_b2", variant="b2")
@register("efficientnet_b1", variant="b1")
@register("efficientnet_b0", variant="b0")
class EfficientNet(nn.Module):
    """torchvision EfficientNet-B0..B3. `num_classes` None or 0: no classifier head. `dropout` None: the variant's
    (0.2, 0.2, 0.3, 0.3). `drop_path_rate` grows linearly from 0 at the first block as in torchvision. `norm_eps`:
    every norm's epsilon (1e-5 in torchvision and timm; 1e-3 for TF-ported weights).

    `output_stride` 16 / 8 trades the strides from that point on for dilation as MobileNetV2 does.
    """

    variant: str = "b0"
    num_classes: int | None = 1000
    output_stride: int = 32
    drop_path_rate: float = 0.2
    dropout: float | None = None
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"EfficientNet variant '{self.variant}' is unknown; choose one of {', '.join(VARIANTS)}")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"EfficientNet output_stride {self.output_stride} is unsupported; choose 8, 16 or 32")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"EfficientNet drop_path_rate {self.drop_path_rate} must be in [0, 1)")
        check_norm(self.norm)
        super().__post_init__()

    @property
    def width_multiplier(self) -> float:
        return VARIANTS[self.variant][0]

    @property
    def depth_multiplier(self) -> float:
        return VARIANTS[self.variant][1]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        """Logits [B, num_classes] float32 (pooled features without a head), or with `features=True` the dict
        {4, 8, 16, 32} -> output of the last stage at that nominal stride (24, 40, 112, 320 channels for B0,
        scaled by the width multiplier; the stride-32 map is the last block's, before the 1x1 head conv)."""
        kw = dict(norm=self.norm, num_groups=self.num_groups, norm_eps=self.norm_eps, dtype=self.dtype)
        w, d = self.width_multiplier, self.depth_multiplier
        stages = [(t, k, s, make_divisible(c_in * w), make_divisible(c_out * w), int(math.ceil(n * d)))
                  for t, k, s, c_in, c_out, n in STAGES]
        total_blocks = sum(stage[-1] for stage in stages)
        x = x.astype(self.dtype)
        x = ConvNormAct(stages[0][3], 3, 2, activation=nn.silu, name="stem", **kw)(x, train)
        stride, dilation, index, feats = 2, 1, 0, {}  # stride and dilation reached so far
        for t, k, s, _, c_out, n in stages:
            for j in range(n):
                block_stride, block_dilation = (s if j == 0 else 1), dilation
                if stride * block_stride > self.output_stride:
                    block_stride, dilation = 1, dilation * block_stride
                stride *= block_stride
                x = MBConv(c_out, t, block_stride, block_dilation, kernel_size=k,
                           drop_path_rate=self.drop_path_rate * index / total_blocks, name=f"block{index + 1}",
                           **kw)(x, train)
                index += 1
            feats[stride * dilation] = x  # keyed by nominal stride; the last stage at a stride wins
        if features:
            return {key: feats[key] for key in (4, 8, 16, 32)}
        x = ConvNormAct(4 * stages[-1][4], 1, activation=nn.silu, name="last_conv", **kw)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes:
            dropout = VARIANTS[self.variant][2] if self.dropout is None else self.dropout
            x = nn.Dropout(dropout, deterministic=not train)(x)
            # torchvision: uniform(-1 / sqrt(num_classes), 1 / sqrt(num_classes)), zero bias.
            x = nn.Dense(self.num_classes, dtype=self.dtype, name="head",
                         kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_out", "uniform"))(x)
        return x.astype(jnp.float32)
