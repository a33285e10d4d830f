"""Atrous Spatial Pyramid Pooling (DeepLabv3) with its image-pooling branch."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 ConvNormAct (ReLU) -> broadcast back to the input's H x W.

    Bilinear upsampling of a 1x1 map is a broadcast, so the broadcast is exact.
    """

    channels: int = 256
    norm: str = "batch"
    num_groups: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        b, h, w, _ = x.shape
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        y = ConvNormAct(self.channels, 1, norm=self.norm, num_groups=self.num_groups, dtype=self.dtype,
                        name="proj")(pooled, train)
        return jnp.broadcast_to(y, (b, h, w, self.channels))


class ASPP(nn.Module):
    """1x1 branch, one 3x3 atrous branch per rate, image pooling; concat -> 1x1 projection to `channels`.

    Every branch and the projection are conv + norm + ReLU; dropout (`dropout_rate`, needs the
    'dropout' RNG when training) follows the projection as in DeepLab.
    """

    channels: int = 256
    rates: Sequence[int] = (6, 12, 18)
    dropout_rate: float = 0.1
    norm: str = "batch"
    num_groups: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(norm=self.norm, num_groups=self.num_groups, dtype=self.dtype)
        branches = [ConvNormAct(self.channels, 1, name="conv1x1", **kw)(x, train)]
        for i, rate in enumerate(self.rates):
            branches.append(ConvNormAct(self.channels, 3, dilation=rate, name=f"atrous{i}", **kw)(x, train))
        branches.append(ImagePooling(self.channels, name="pooling", **kw)(x, train))
        y = ConvNormAct(self.channels, 1, name="project", **kw)(jnp.concatenate(branches, axis=-1), train)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)
