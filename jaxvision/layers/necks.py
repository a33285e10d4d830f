"""Necks of the ADAS perception model (seed 000, section 3.3.2, Figure 3.7): backbone features at strides
{4, 8, 16, 32} -> a stride-32 map for the scene tags and a stride-4 map for detection and lanes.

* `SimpleNeck`: only the stride-32 features; three times a 3x3 conv then a 4x4 stride-2 transposed conv
  initialised as bilinear upsampling (CenterNet's ResNet neck). The tag features are the first conv's output.
* `BiFPN`: EfficientDet's weighted bidirectional pyramid. Each input level is projected to `channels` by
  a 1x1 conv; each of `repeats` layers runs a top-down path (nearest-neighbour upsampling) then a bottom-up
  path (3x3 stride-2 max pooling), every node a 3x3 conv of a weighted sum of its inputs. The weights are
  learned, one per input, with EfficientDet's fast normalised fusion sum_i relu(w_i) x_i / (eps + sum_i relu(w_i)).
  The thesis writes one weight on the second input of each node; normalised per-input weights contain that
  case and are what its reference (EfficientDet) uses. Outputs: B_4 for detection / lanes, B_32 for tags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, make_norm

STRIDES = (4, 8, 16, 32)
FUSION_EPS = 1e-4


def bilinear_upsampling_kernel(kernel_size: int, channels: int) -> np.ndarray:
    """[k, k, C, C] transposed-conv kernel that upsamples each channel bilinearly (FCN's initialisation)."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - np.abs(np.arange(kernel_size) - centre) / factor
    kernel = np.zeros((kernel_size, kernel_size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[..., None]
    return kernel


class SimpleNeck(nn.Module):
    """Stride-32 features -> (tag features [B, h/32, w/32, C], features [B, h/4, w/4, C]), C = `channels`."""

    channels: int = 256
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: dict, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
        init = lambda key, shape, dtype: jnp.asarray(bilinear_upsampling_kernel(shape[0], shape[-1]), dtype)  # noqa: E731
        x = features[32]
        tag_features = None
        for i in range(3):
            x = ConvNormAct(self.channels, 3, norm=self.norm, dtype=self.dtype, name=f"conv{i}")(x, train)
            tag_features = x if tag_features is None else tag_features
            x = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                                 dtype=self.dtype, kernel_init=init, name=f"up{i}")(x)
            x = nn.relu(make_norm(self.norm, train, self.channels, dtype=self.dtype, name=f"up{i}_norm")(x))
        return tag_features, x


def _fuse(inputs: list[jnp.ndarray], name: str, module: nn.Module) -> jnp.ndarray:
    """Fast normalised fusion of same-shaped `inputs` with learned non-negative weights (param `name`)."""
    weights = nn.relu(module.param(name, nn.initializers.ones, (len(inputs),), jnp.float32))
    weights = weights / (jnp.sum(weights) + FUSION_EPS)
    return sum(w.astype(x.dtype) * x for w, x in zip(weights, inputs))


def upsample_nearest(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Nearest-neighbour resize of NHWC `x` to `size` (x2 between pyramid levels)."""
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method="nearest")


def downsample_max(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 stride-2 max pooling with 'SAME' padding (ceil(n / 2) outputs)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


class BiFPNLayer(nn.Module):
    """One top-down + bottom-up pass over {stride: [B, h, w, C]} maps; returns the new maps."""

    channels: int
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: dict, train: bool) -> dict:
        conv = lambda name: ConvNormAct(self.channels, 3, norm=self.norm, dtype=self.dtype, name=name)  # noqa: E731
        strides = sorted(levels)
        top_down = {strides[-1]: levels[strides[-1]]}
        for s in reversed(strides[:-1]):
            coarse = upsample_nearest(top_down[2 * s], levels[s].shape[1:3])
            top_down[s] = conv(f"td{s}")(_fuse([levels[s], coarse], f"td{s}_weights", self), train)
        out = {strides[0]: top_down[strides[0]]}
        for s in strides[1:]:
            inputs = [levels[s], downsample_max(out[s // 2])]
            if s != strides[-1]:
                inputs.insert(1, top_down[s])
            out[s] = conv(f"bu{s}")(_fuse(inputs, f"bu{s}_weights", self), train)
        return out


class BiFPN(nn.Module):
    """Features {4, 8, 16, 32} -> (B_32 [B, h/32, w/32, C], B_4 [B, h/4, w/4, C]) after `repeats` BiFPN layers."""

    channels: int = 64
    repeats: int = 3
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: dict, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
        if self.repeats < 1:
            raise ValueError(f"BiFPN repeats must be >= 1, got {self.repeats}")
        levels = {s: ConvNormAct(self.channels, 1, activation=None, norm=self.norm, dtype=self.dtype,
                                 name=f"lateral{s}")(features[s], train) for s in STRIDES}
        for i in range(self.repeats):
            levels = BiFPNLayer(self.channels, self.norm, self.dtype, name=f"layer{i}")(levels, train)
        return levels[32], levels[4]
