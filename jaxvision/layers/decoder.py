"""DeepLabv3+ decoder: upsampled context features + reduced stride-4 skip -> two 3x3 convs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Bilinear resize of NHWC `x` to `size` (half-pixel centres = PyTorch align_corners=False)."""
    b, _, _, c = x.shape
    return jax.image.resize(x, (b, size[0], size[1], c), method="bilinear", antialias=False)


class DeepLabV3PlusDecoder(nn.Module):
    """Returns `channels` features at the resolution of `skip` (the stride-4 encoder features).

    The context features `x` (ASPP output) are upsampled to the skip's size; the skip is reduced
    by a 1x1 ConvNormAct to `skip_channels` and concatenated (`skip_channels=0`: no skip
    connection, the skip only sets the output size); then two 3x3 ConvNormAct.
    """

    channels: int = 256
    skip_channels: int = 48
    norm: str = "batch"
    num_groups: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(norm=self.norm, num_groups=self.num_groups, dtype=self.dtype)
        x = resize_bilinear(x, skip.shape[1:3]).astype(self.dtype)
        if self.skip_channels > 0:
            skip = ConvNormAct(self.skip_channels, 1, name="skip", **kw)(skip, train)
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        x = ConvNormAct(self.channels, 3, name="conv0", **kw)(x, train)
        return ConvNormAct(self.channels, 3, name="conv1", **kw)(x, train)
