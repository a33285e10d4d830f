"""Squeeze-and-excitation channel gating (Hu et al. 2018), in timm's SEModule layout."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(act(fc1(mean_hw(x))))) with 1x1 convs (as dense layers) with bias.

    fc1 maps C to `squeeze_channels` (default C // `reduction`, at least 1), fc2 back to C.
    Submodules are named 'fc1' and 'fc2' as in timm.
    """

    reduction: int = 16
    squeeze_channels: int | None = None
    activation: Callable = nn.relu
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        if self.squeeze_channels is not None and self.squeeze_channels < 1:
            raise ValueError(f"SqueezeExcite squeeze_channels {self.squeeze_channels} must be positive")
        if self.reduction < 1:
            raise ValueError(f"SqueezeExcite reduction {self.reduction} must be positive")
        squeeze = self.squeeze_channels or max(1, channels // self.reduction)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.activation(nn.Dense(squeeze, dtype=self.dtype, name="fc1")(s))
        s = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="fc2")(s))
        return x * s
