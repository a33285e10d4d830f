"""Orthonormal DCT-II and its inverse (DCT-III) along any axis, as a matrix and by FFT (Makhoul 1980).

`dct_matrix(n, n_bar)` is the constant D_bar [n_bar, n] (rows: the first n_bar orthonormal DCT-II basis
vectors), so `dct_matrix(n) @ x == scipy.fft.dct(x, norm="ortho", axis=0)`. `dct` / `idct` compute the
same transforms with one complex FFT of length n (any n, odd or prime included) and no n x n_bar constant.
`masked_dct_matrix` builds, per example, the basis of that example's real tokens (see its docstring).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def _dct_matrix64(n: int, n_bar: int) -> np.ndarray:
    k = np.arange(n_bar)[:, None]
    i = np.arange(n)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    m = scale * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m.setflags(write=False)
    return m


def _check_sizes(n: int, n_bar: int | None) -> int:
    n_bar = n if n_bar is None else n_bar
    if n < 1 or not 1 <= n_bar <= n:
        raise ValueError(f"DCT: need 1 <= n_bar <= n, got n={n}, n_bar={n_bar}")
    return n_bar


def dct_matrix(n: int, n_bar: int | None = None, dtype=np.float32) -> np.ndarray:
    """D_bar [n_bar, n]: the first `n_bar` (default n) orthonormal DCT-II basis vectors as rows.

    Computed once in float64 per (n, n_bar) and cached; the returned array is read-only.
    """
    n_bar = _check_sizes(n, n_bar)
    return _cached_cast(n, n_bar, np.dtype(dtype))


@functools.lru_cache(maxsize=None)
def _cached_cast(n: int, n_bar: int, dtype: np.dtype) -> np.ndarray:
    m = _dct_matrix64(n, n_bar).astype(dtype)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=None)
def _makhoul_constants(n: int):
    """Reorder v = (x[0], x[2], ..., x[3], x[1]), its inverse, and the twiddles exp(-i pi k / 2n)."""
    order = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)[::-1]])
    twiddle = np.exp(-0.5j * np.pi * np.arange(n) / n)
    scale = np.full(n, np.sqrt(2.0 / n))
    scale[0] = np.sqrt(1.0 / n)
    return order, np.argsort(order), twiddle.astype(np.complex64), scale.astype(np.float32)


def dct(x: jnp.ndarray, axis: int = -1, n_bar: int | None = None) -> jnp.ndarray:
    """Orthonormal DCT-II of `x` along `axis`, keeping the first `n_bar` (default all) coefficients.

    Makhoul's method: even samples then odd samples reversed, one FFT of length n, a twiddle. Float32 out.
    """
    x = jnp.moveaxis(jnp.asarray(x, jnp.float32), axis, -1)
    n = x.shape[-1]
    n_bar = _check_sizes(n, n_bar)
    order, _, twiddle, scale = _makhoul_constants(n)
    spectrum = jnp.fft.fft(x[..., order])[..., :n_bar]
    out = jnp.real(spectrum * twiddle[:n_bar]) * scale[:n_bar]
    return jnp.moveaxis(out, -1, axis)


def idct(x_bar: jnp.ndarray, n: int, axis: int = -1) -> jnp.ndarray:
    """Inverse of `dct` (orthonormal DCT-III) along `axis`: n_bar <= n coefficients -> n samples.

    The missing coefficients n_bar..n-1 are taken as zero, so this is D_bar^T x_bar. Float32 out.
    """
    x_bar = jnp.moveaxis(jnp.asarray(x_bar, jnp.float32), axis, -1)
    n_bar = _check_sizes(n, x_bar.shape[-1])
    _, inverse_order, twiddle, scale = _makhoul_constants(n)
    # y_k = X_k / scale_k recovers Re(w_k V_k); with y_n = 0, w_k V_k = y_k - i y_{n-k} for real v.
    y = jnp.pad(x_bar / scale[:n_bar], [(0, 0)] * (x_bar.ndim - 1) + [(0, n - n_bar)])
    y_reflected = jnp.concatenate([jnp.zeros_like(y[..., :1]), y[..., :0:-1]], axis=-1)
    spectrum = (y - 1j * y_reflected) * jnp.conj(twiddle)
    v = jnp.real(jnp.fft.ifft(spectrum))
    return jnp.moveaxis(v[..., inverse_order].astype(jnp.float32), -1, axis)


def masked_dct_matrix(mask: jnp.ndarray, n_bar: int) -> jnp.ndarray:
    """Per-example DCT-II basis of the real tokens: [B, n_bar, N] float32 from `mask` [B, N] (True = real).

    For an example with L real tokens, the one at rank r among them (its order in the sequence) gets
    column r of `dct_matrix(L, n_bar)`; padded tokens get zero columns, and rows k >= L are zero.
    So `basis @ x` is the DCT of the example's real tokens alone, wherever the padding is, and
    `basis^T` puts coefficients back on the real positions only.
    """
    mask = mask.astype(bool)
    length = jnp.sum(mask, axis=-1, dtype=jnp.int32)[:, None, None]  # [B, 1, 1]
    rank = (jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1)[:, None, :]  # [B, 1, N]
    k = jnp.arange(n_bar, dtype=jnp.int32)[None, :, None]  # [1, n_bar, 1]
    safe_length = jnp.maximum(length, 1)
    # cos(pi (2r + 1) k / 2L) with the integer phase reduced mod 4L first, so float32 stays exact.
    phase = jnp.mod((2 * rank + 1) * k, 4 * safe_length).astype(jnp.float32)
    basis = jnp.cos(jnp.pi * phase / (2.0 * safe_length.astype(jnp.float32)))
    scale = jnp.where(k == 0, 1.0, jnp.sqrt(2.0)) / jnp.sqrt(safe_length.astype(jnp.float32))
    keep = mask[:, None, :] & (k < length)
    return jnp.where(keep, basis * scale, 0.0)
