"""Depthwise 2D convolution that is fast on XLA:CPU.

XLA:CPU lowers a grouped convolution with one channel per group to a slow generic loop: on a 2-core
CPU a MobileNetV2 depthwise layer runs 10-40x slower than the same arithmetic written as k*k shifted
multiply-adds, which XLA fuses into one elementwise loop (see BENCHMARKS.md). `DepthwiseConv` is an
`nn.Conv` (same fields, same `kernel` [kh, kw, 1, C] parameter, so checkpoints, weight converters and
the profiler see no difference) that computes the shifted form on CPU and XLA's convolution elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from flax import linen as nn


_GROUPED_CONV = contextvars.ContextVar("jaxvision_depthwise_grouped_conv", default=False)


@contextlib.contextmanager
def grouped_conv():
    """Within this context `DepthwiseConv` traces XLA's grouped convolution on every backend (one Conv node
    when exported to ONNX / TensorRT, instead of the CPU-fast shifted multiply-adds)."""
    token = _GROUPED_CONV.set(True)
    try:
        yield
    finally:
        _GROUPED_CONV.reset(token)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def depthwise_conv_shifted(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                           padding: tuple[tuple[int, int], tuple[int, int]],
                           dilation: tuple[int, int]) -> jnp.ndarray:
    """NHWC depthwise conv of `x` [B, H, W, C] with `kernel` [kh, kw, 1, C] as a sum of kh * kw strided slices
    of the padded input times one kernel tap each; equals `lax.conv_general_dilated` with
    feature_group_count=C up to float rounding."""
    kh, kw = kernel.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    out_h = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"depthwise conv: input {x.shape[1]}x{x.shape[2]} is smaller than its {kh}x{kw} kernel")
    out = None
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (xp.shape[0], i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, xp.shape[3])
            term = jax.lax.slice(xp, start, limit, (1, sh, sw, 1)) * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Conv):
    """`nn.Conv` with `feature_group_count` == `features` == input channels (2D, NHWC, explicit padding)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        if not self.features == self.feature_group_count == channels:
            raise ValueError(f"DepthwiseConv: features {self.features}, groups {self.feature_group_count} and input "
                             f"channels {channels} must be equal")
        kh, kw = _pair(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, 1, channels), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        strides, dilation = _pair(self.strides or 1), _pair(self.kernel_dilation or 1)
        padding = tuple(tuple(p) for p in self.padding)
        if jax.default_backend() == "cpu" and not _GROUPED_CONV.get():
            y = depthwise_conv_shifted(x, kernel, strides, padding, dilation)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (channels,), self.param_dtype).astype(y.dtype)
        return y
