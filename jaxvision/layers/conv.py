"""Convolution + normalisation + activation, the building block of the CNNs."""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.depthwise import DepthwiseConv

NORMS = ("batch", "group")

# PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (out_channels * kh * kw)), not truncated.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_padding(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style symmetric padding `dilation * (k - 1) // 2` on both spatial axes."""
    p = dilation * (kernel_size - 1) // 2
    return ((p, p), (p, p))


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """torchvision's / timm's `_make_divisible`: nearest multiple of `divisor` (at least `divisor`), bumped up by
    `divisor` when below `round_limit` * `value` (0: never, as timm's SEModule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


def check_norm(norm: str) -> None:
    """Raises a ValueError naming `norm` unless it is 'batch' or 'group'."""
    if norm not in NORMS:
        raise ValueError(f"norm '{norm}' is unknown; choose one of {', '.join(NORMS)}")


def make_norm(norm: str, train: bool, features: int, num_groups: int = 32, zero_init: bool = False,
              dtype=jnp.float32, name: str | None = None, norm_eps: float = 1e-5) -> nn.Module:
    """BatchNorm (PyTorch momentum 0.1) or GroupNorm with gcd(num_groups, features) groups, both with epsilon
    `norm_eps` (PyTorch's default 1e-5).

    `zero_init` sets the initial scale (gamma) to 0. Under `jax.jit` with the batch sharded over a
    mesh, BatchNorm's batch means are global.
    """
    check_norm(norm)
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    if norm == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=norm_eps, dtype=dtype,
                            scale_init=scale_init, name=name)
    return nn.GroupNorm(num_groups=math.gcd(num_groups, features), epsilon=norm_eps, dtype=dtype,
                        scale_init=scale_init, name=name)


class ConvNormAct(nn.Module):
    """k x k conv (no bias) -> BatchNorm | GroupNorm -> activation (None: no activation).

    Padding is `dilation * (k - 1) // 2` on each side, as in PyTorch, so strided convs sample
    the same pixels. `norm_eps` is the norm's epsilon. Submodules are named 'conv' and 'norm'. A depthwise
    conv (groups == features == input channels) is a `DepthwiseConv`, fast on CPU.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    norm: str = "batch"
    num_groups: int = 32
    norm_eps: float = 1e-5
    activation: Callable | None = nn.relu
    zero_init_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        depthwise = 1 < self.groups == self.features == x.shape[-1]
        x = (DepthwiseConv if depthwise else nn.Conv)(
                    self.features, (self.kernel_size, self.kernel_size), strides=self.stride,
                    padding=conv_padding(self.kernel_size, self.dilation), kernel_dilation=self.dilation,
                    feature_group_count=self.groups, use_bias=False, dtype=self.dtype,
                    kernel_init=kaiming_normal_fan_out, name="conv")(x)
        x = make_norm(self.norm, train, self.features, self.num_groups, self.zero_init_norm, self.dtype,
                      name="norm", norm_eps=self.norm_eps)(x)
        return x if self.activation is None else self.activation(x)
