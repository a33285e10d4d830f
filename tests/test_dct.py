"""Orthonormal DCT-II / DCT-III: matrix and FFT (Makhoul) paths against scipy, orthonormality, inverse, grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from jax.test_util import check_grads

from jaxvision.ops import dct as eager_dct
from jaxvision.ops import dct_matrix, idct as eager_idct, masked_dct_matrix

# Under jit throughout (also faster to compile here than op by op).
dct = jax.jit(eager_dct, static_argnames=("axis", "n_bar"))
idct = jax.jit(eager_idct, static_argnames=("n", "axis"))
SIZES = [1, 2, 8, 37]  # powers of two, an odd prime


@pytest.mark.parametrize("n", SIZES)
def test_matrix_and_fft_match_scipy(n):
    x = np.random.default_rng(n).normal(size=(3, n))
    ref = scipy.fft.dct(x, norm="ortho", axis=-1)
    np.testing.assert_allclose(x @ dct_matrix(n, dtype=np.float64).T, ref, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dct(jnp.asarray(x, jnp.float32))), ref, atol=1e-5)
    n_bar = max(1, n // 3)
    np.testing.assert_allclose(np.asarray(dct(jnp.asarray(x, jnp.float32), n_bar=n_bar)), ref[:, :n_bar], atol=1e-5)
    # idct of the first n_bar coefficients = scipy's inverse with the others zero = D_bar^T x_bar.
    padded = np.pad(ref[:, :n_bar], [(0, 0), (0, n - n_bar)])
    expected = scipy.fft.idct(padded, norm="ortho", axis=-1)
    np.testing.assert_allclose(np.asarray(idct(jnp.asarray(ref[:, :n_bar], jnp.float32), n)), expected, atol=1e-5)
    np.testing.assert_allclose(ref[:, :n_bar] @ dct_matrix(n, n_bar, np.float64), expected, atol=1e-12)


def test_other_axes():
    x = np.random.default_rng(0).normal(size=(4, 11, 3)).astype(np.float32)
    ref = scipy.fft.dct(x.astype(np.float64), norm="ortho", axis=1)
    np.testing.assert_allclose(np.asarray(dct(x, axis=1)), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dct(x, axis=-3, n_bar=2)), scipy.fft.dct(x, norm="ortho", axis=0)[:2],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(idct(ref[:, :5], 11, axis=1)),
                               np.einsum("kn,bkc->bnc", dct_matrix(11, 5, np.float64), ref[:, :5]), atol=1e-5)


@pytest.mark.parametrize("n", [1, 6, 13, 37])
def test_orthonormal_rows(n):
    d = dct_matrix(n, dtype=np.float64)
    np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(d.T @ d, np.eye(n), atol=1e-12)
    n_bar = max(1, n // 2)
    d_bar = dct_matrix(n, n_bar, np.float64)
    np.testing.assert_allclose(d_bar @ d_bar.T, np.eye(n_bar), atol=1e-12)
    np.testing.assert_array_equal(d_bar, d[:n_bar])


def test_matrix_is_a_cached_read_only_constant():
    d = dct_matrix(9, 4)
    assert d.shape == (4, 9) and d.dtype == np.float32
    assert dct_matrix(9, 4) is d
    with pytest.raises(ValueError):
        d[0, 0] = 1.0
    with pytest.raises(ValueError, match="n_bar <= n"):
        dct_matrix(4, 5)
    with pytest.raises(ValueError, match="n_bar <= n"):
        eager_dct(jnp.zeros((2, 3)), n_bar=4)
    with pytest.raises(ValueError, match="n_bar <= n"):
        eager_idct(jnp.zeros((2, 4)), 3)


@pytest.mark.parametrize("n", [16, 37])
def test_fft_equals_matrix_and_inverts(n):
    x = jax.random.normal(jax.random.PRNGKey(n), (2, n, 3))
    d = jnp.asarray(dct_matrix(n))
    np.testing.assert_allclose(np.asarray(dct(x, axis=1)), np.asarray(jnp.einsum("kn,bnc->bkc", d, x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(idct(dct(x, axis=1), n, axis=1)), np.asarray(x), atol=1e-5)
    c = dct(x, axis=1, n_bar=n // 2)
    np.testing.assert_allclose(np.asarray(idct(c, n, axis=1)), np.asarray(jnp.einsum("kn,bkc->bnc", d[:n // 2], c)),
                               atol=1e-5)
    assert dct(x, axis=1).dtype == jnp.float32 and idct(c, n, axis=1).dtype == jnp.float32


def test_jit_and_gradients_by_finite_differences():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7))
    check_grads(jax.jit(lambda t: eager_dct(t, n_bar=4)), (x,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2,
                eps=1e-2)
    check_grads(jax.jit(lambda t: eager_idct(t, 7)), (x[:, :4],), order=1, modes=("rev",), atol=1e-2, rtol=1e-2,
                eps=1e-2)
    # The transform is linear, so grad of <w, dct(x)> is D^T w, exactly.
    w = jax.random.normal(jax.random.PRNGKey(1), (2, 4))
    grad = jax.jit(jax.grad(lambda t: jnp.sum(w * eager_dct(t, n_bar=4))))(x)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(w) @ dct_matrix(7, 4), atol=1e-5)


def test_masked_basis_is_the_basis_of_the_real_tokens():
    mask = jnp.asarray([[True] * 9, [True, False, True, True, False, False, True, True, False],
                        [True, True, False, False, False, False, False, False, False]])
    basis = np.asarray(masked_dct_matrix(mask, 4))
    assert basis.shape == (3, 4, 9)
    np.testing.assert_allclose(basis[0], dct_matrix(9, 4), atol=1e-6)
    real = np.asarray(mask[1])
    np.testing.assert_allclose(basis[1][:, real], dct_matrix(5, 4), atol=1e-6)
    np.testing.assert_array_equal(basis[1][:, ~real], 0.0)
    # Two real tokens: two basis vectors, the rows beyond the length are zero.
    np.testing.assert_allclose(basis[2][:2, :2], dct_matrix(2), atol=1e-6)
    np.testing.assert_array_equal(basis[2][2:], 0.0)
    np.testing.assert_array_equal(basis[2][:, 2:], 0.0)
