"""The attention family of `make_attention`: spec parsing, each kind against an independent numpy path or an
exact identity (n_bar = n, landmarks = tokens, identity projections), masks, jit and grad at n = 37."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from jax.test_util import check_grads

from jaxvision.layers.efficient_attention import (AttentionSpec, iterative_pinv, make_attention, parse_attention_spec,
                                                  performer_features)
from jaxvision.layers.transformer import EncoderBlock
from jaxvision.ops import dct_matrix

D, HEADS = 8, 2
RNG = jax.random.key(3, impl="rbg")  # dropout keys: threefry compiles several times slower on CPU
ALL_KINDS = ["vanilla", "fused", "dct-0.25", "dct_fft-0.25", "dct_ideal-0.25", "linformer-0.25", "nystrom-0.25",
             "performer-0.25"]


# ----------------------------------------------------------------------------------------------- helpers

def random_params(spec, n, seed=0, scale=0.5):
    """Random params (qkv / proj and any extra ones) for `spec` at sequence length n, without compiling init."""
    shapes = jax.eval_shape(lambda: make_attention(spec, HEADS).init(jax.random.PRNGKey(0), jnp.zeros((1, n, D))))
    leaves, tree = jax.tree.flatten(shapes)
    r = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [jnp.asarray(r.normal(size=s.shape) * scale, jnp.float32) for s in leaves])


def inputs(b, n, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, n, D)), jnp.float32)


@functools.lru_cache(maxsize=None)
def jitted_apply(spec, dropout_rate=0.0):
    return jax.jit(make_attention(spec, HEADS, dropout_rate=dropout_rate).apply, static_argnames=("train",))


def apply(spec, v, x, mask=None, **kw):
    """The module of `spec` applied under jit (one compilation per spec and shapes; faster than eager)."""
    return np.asarray(jitted_apply(spec)(v, x, mask, **kw))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_heads(t):  # [B, N, D] -> [B, H, N, hd]
    b, n, d = t.shape
    return t.reshape(b, n, HEADS, d // HEADS).transpose(0, 2, 1, 3)


def np_merge(t):
    b, h, n, hd = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def np_qkv(x, p):
    qkv = np.asarray(x, np.float64) @ np.asarray(p["qkv"]["kernel"], np.float64) + np.asarray(p["qkv"]["bias"])
    return [np_heads(t) for t in np.split(qkv, 3, axis=-1)]


def np_proj(out, p):
    return out @ np.asarray(p["proj"]["kernel"], np.float64) + np.asarray(p["proj"]["bias"])


def np_softmax_attention_weights(q, k):
    return softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))


# ----------------------------------------------------------------------------------------------- spec

@pytest.mark.parametrize("spec,kind,size", [("vanilla", "vanilla", None), ("fused", "fused", None),
                                            ("dct", "dct", 0.25), ("dct-32", "dct", 32), ("dct-0.25", "dct", 0.25),
                                            ("dct_fft-1.0", "dct_fft", 1.0), ("dct_ideal-32", "dct_ideal", 32),
                                            ("linformer-0.125", "linformer", 0.125), ("nystrom", "nystrom", 0.125),
                                            ("performer-1", "performer", 1)])
def test_spec_parsing(spec, kind, size):
    parsed = parse_attention_spec(spec)
    assert parsed == AttentionSpec(kind, size) and type(parsed.size) is type(size)


def test_spec_sizes_resolve_against_n():
    assert parse_attention_spec("dct-0.25").resolve(128) == 32
    assert parse_attention_spec("dct-0.25").resolve(197) == 49  # ViT at 224: class token + 14 x 14 patches
    assert parse_attention_spec("dct-0.01").resolve(37) == 1
    assert parse_attention_spec("dct-32").resolve(1000) == 32


@pytest.mark.parametrize("spec", ["dtc", "DCT-0.25", "vanilla-3", "fused-0.5", "dct-0", "dct-0.0", "dct-1.5",
                                  "dct-abc", "dct-", "dct--1", "dct-nan", "dct-32-1", 32])
def test_spec_errors_name_the_spec_and_the_kinds(spec):
    with pytest.raises(ValueError, match="allowed kinds: vanilla, fused, dct, dct_fft") as info:
        parse_attention_spec(spec)
    assert repr(spec) in str(info.value)
    with pytest.raises(ValueError):
        make_attention(spec, HEADS)


# ----------------------------------------------------------------------------------------------- kinds vs references

def test_fused_equals_vanilla():
    n = 11
    v, x = random_params("vanilla", n), inputs(2, n)
    mask = jnp.arange(n)[None] < jnp.asarray([[n], [6]])
    for m in (None, mask):
        np.testing.assert_allclose(apply("fused", v, x, m), apply("vanilla", v, x, m), atol=1e-5)
    # In training with weight dropout the fused kind runs the explicit kernel, with the same random mask.
    kw = dict(train=True, rngs={"dropout": RNG})
    drop = lambda spec: np.asarray(jitted_apply(spec, dropout_rate=0.3)(v, x, mask, **kw))
    np.testing.assert_allclose(drop("fused"), drop("vanilla"), atol=1e-6)


def numpy_dct_attention(x, p, n_bar, query_pos=None):
    """Algorithm 1 with scipy's DCT: X_bar = DCT(X)[:n_bar], q/k/v from X_bar, softmax attention, IDCT, proj."""
    n = x.shape[1]
    x_bar = scipy.fft.dct(np.asarray(x, np.float64), norm="ortho", axis=1)[:, :n_bar]
    q, k, v = np_qkv(x_bar, p)
    if query_pos is not None:
        q = q + np_heads(scipy.fft.dct(np.asarray(query_pos, np.float64), norm="ortho", axis=1)[:, :n_bar])
    out = np_merge(np_softmax_attention_weights(q, k) @ v)
    out = scipy.fft.idct(np.pad(out, [(0, 0), (0, n - n_bar), (0, 0)]), norm="ortho", axis=1)
    return np_proj(out, p)


@pytest.mark.parametrize("spec,n_bar", [("dct-0.25", 9), ("dct-37", 37), ("dct_fft-0.25", 9)])
def test_dct_attention_matches_algorithm_1(spec, n_bar):
    n = 37
    v, x = random_params(spec, n), inputs(2, n)
    np.testing.assert_allclose(apply(spec, v, x), numpy_dct_attention(x, v["params"], n_bar), rtol=1e-4, atol=1e-4)
    pos = inputs(1, n, seed=5)
    np.testing.assert_allclose(apply(spec, v, x, query_pos=pos), numpy_dct_attention(x, v["params"], n_bar, pos),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", ["0.25", "1"])
def test_dct_matrix_equals_dct_fft(size):
    n = 37
    v, x = random_params("dct", n), inputs(3, n)
    np.testing.assert_allclose(apply(f"dct_fft-{size}", v, x), apply(f"dct-{size}", v, x), atol=1e-5)


def test_dct_ideal_with_all_coefficients_is_vanilla():
    n = 13
    v, x = random_params("vanilla", n), inputs(2, n)
    mask = jnp.arange(n)[None] < jnp.asarray([[n], [8]])
    np.testing.assert_allclose(apply("dct_ideal-1.0", v, x), apply("vanilla", v, x), atol=1e-5)
    real = np.asarray(mask)  # the outputs at padded positions differ (zero attention there) and do not matter
    np.testing.assert_allclose(apply("dct_ideal-1.0", v, x, mask)[real], apply("vanilla", v, x, mask)[real], atol=1e-5)
    # Per example, n_bar >= its real length is exact too.
    np.testing.assert_allclose(apply("dct_ideal-8", v, x, mask)[1, :8], apply("vanilla", v, x, mask)[1, :8], atol=1e-5)
    assert not np.allclose(apply("dct_ideal-8", v, x, mask)[0], apply("vanilla", v, x, mask)[0], atol=1e-3)


def test_dct_ideal_matches_algorithm_2():
    n, n_bar = 10, 4
    v, x = random_params("vanilla", n), inputs(2, n)
    q, k, val = np_qkv(x, v["params"])
    e = np_softmax_attention_weights(q, k)
    d_bar = dct_matrix(n, n_bar, np.float64)
    e_tilde = d_bar.T @ (d_bar @ e @ d_bar.T) @ d_bar
    expected = np_proj(np_merge(e_tilde @ val), v["params"])
    np.testing.assert_allclose(apply(f"dct_ideal-{n_bar}", v, x), expected, rtol=1e-4, atol=1e-4)


def test_linformer_with_identity_projections_is_vanilla():
    n = 9
    v, x = random_params("linformer-1.0", n), inputs(2, n)
    assert v["params"]["seq_proj_k"].shape == (n, n)
    eye = dict(v["params"], seq_proj_k=jnp.eye(n), seq_proj_v=jnp.eye(n))
    ref = {"params": {k: v["params"][k] for k in ("qkv", "proj")}}
    np.testing.assert_allclose(apply("linformer-1.0", {"params": eye}, x), apply("vanilla", ref, x), atol=1e-5)
    pos = inputs(1, n, seed=5)
    np.testing.assert_allclose(apply("linformer-1.0", {"params": eye}, x, query_pos=pos),
                               apply("vanilla", ref, x, query_pos=pos), atol=1e-5)


def test_linformer_matches_numpy_and_checks_its_length():
    n = 12
    v, x = random_params("linformer-0.25", n), inputs(2, n)
    p = v["params"]
    assert p["seq_proj_k"].shape == (n, 3)
    q, k, val = np_qkv(x, p)
    e, f = np.asarray(p["seq_proj_k"], np.float64), np.asarray(p["seq_proj_v"], np.float64)
    k_bar, v_bar = np.einsum("nj,bhnd->bhjd", e, k), np.einsum("nj,bhnd->bhjd", f, val)
    expected = np_proj(np_merge(np_softmax_attention_weights(q, k_bar) @ v_bar), p)
    np.testing.assert_allclose(apply("linformer-0.25", v, x), expected, rtol=1e-4, atol=1e-4)
    assert apply("linformer-0.25", v, x[:, :7]).shape == (2, 7, D)  # shorter: the first rows of E and F
    with pytest.raises(ValueError, match="sequence length 13 exceeds the 12 tokens"):
        apply("linformer-0.25", v, inputs(1, 13))


def test_iterative_pinv_matches_numpy():
    r = np.random.default_rng(0)
    a = softmax(r.normal(size=(3, 6, 6)) * 2 + 4 * np.eye(6))  # row-stochastic like the Nystrom kernel
    np.testing.assert_allclose(np.asarray(iterative_pinv(jnp.asarray(a, jnp.float32))), np.linalg.pinv(a),
                               rtol=1e-3, atol=1e-3)
    far = np.asarray(iterative_pinv(jnp.asarray(a, jnp.float32), iterations=1))
    assert not np.allclose(far, np.linalg.pinv(a), atol=1e-2)  # the iterations do the work


def numpy_pinv(a, iterations=6):
    """Nystromformer eq. 12 in float64."""
    eye = np.eye(a.shape[-1])
    z = np.swapaxes(a, -1, -2) / (a.sum(-2).max(-1) * a.sum(-1).max(-1))[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def numpy_nystrom(x, p, m):
    """Nystromformer with landmark j the mean of the tokens r with floor(r m / n) = j."""
    q, k, v = np_qkv(x, p)
    n = x.shape[1]
    seg = np.arange(n) * m // n
    means = (seg[:, None] == np.arange(m)) / np.bincount(seg, minlength=m)
    q_l, k_l = np.einsum("nm,bhnd->bhmd", means, q), np.einsum("nm,bhnd->bhmd", means, k)
    f1, a, f3 = (np_softmax_attention_weights(s, t) for s, t in ((q, k_l), (q_l, k_l), (q_l, k)))
    return np_proj(np_merge(f1 @ numpy_pinv(a) @ f3 @ v), p)


@pytest.mark.parametrize("n,m", [(10, 4), (7, 7)])
def test_nystrom_matches_numpy_with_uneven_segments(n, m):
    v, x = random_params("vanilla", n, scale=0.3), inputs(2, n)
    np.testing.assert_allclose(apply(f"nystrom-{m}", v, x), numpy_nystrom(x, v["params"], m), rtol=1e-4, atol=1e-4)


def test_performer_features_are_orthogonal_blocks_and_fixed():
    w = performer_features(10, 4, 0)
    assert w.shape == (10, 4) and w.dtype == np.float32 and not w.flags.writeable
    assert performer_features(10, 4, 0) is w
    for block in (w[:4], w[4:8]):
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-5)
    assert not np.allclose(performer_features(10, 4, 1), w)
    # Rows are marginally N(0, I) (needs Haar-random blocks: a plain QR biases the covariance by ~0.04).
    np.testing.assert_allclose(np.cov(performer_features(8192, 4, 0).T), np.eye(4), atol=0.03)


def test_performer_matches_favor_plus_in_numpy():
    n, m = 9, 6
    v, x = random_params("vanilla", n), inputs(2, n)
    q, k, val = np_qkv(x, v["params"])
    w = performer_features(m, D // HEADS, 0).astype(np.float64)
    scale = (D // HEADS) ** -0.25
    phi = lambda t: np.exp((scale * t) @ w.T - 0.5 * np.sum((scale * t) ** 2, -1, keepdims=True))
    qf, kf = phi(q), phi(k)
    out = (qf @ (kf.transpose(0, 1, 3, 2) @ val)) / (qf @ kf.sum(-2)[..., None])
    np.testing.assert_allclose(apply(f"performer-{m}", v, x), np_proj(np_merge(out), v["params"]), rtol=1e-3,
                               atol=1e-4)


def test_performer_approximates_softmax_attention_with_many_features():
    n = 16
    v, x = random_params("vanilla", n, scale=0.2), inputs(2, n)
    exact = apply("vanilla", v, x)
    err_many = np.abs(apply("performer-2048", v, x) - exact).mean()
    err_few = np.abs(apply("performer-8", v, x) - exact).mean()
    assert err_many < 0.03 * np.abs(exact).mean() and err_many < err_few / 5  # error ~ 1 / sqrt(features)


# ----------------------------------------------------------------------------------------------- masks

# Sizes as counts, so the padded and the unpadded sequence keep the same number (8 > 5 real tokens: capped).
# (dct_fft with a mask takes dct's per-example basis; its unpadded reference goes through the FFT.)
@pytest.mark.parametrize("spec", ["vanilla", "fused", "dct-8", "dct_fft-4", "dct_ideal-3", "linformer-4", "nystrom-3",
                                  "nystrom-8", "performer-6"])
def test_padding_changes_nothing_at_real_positions(spec):
    """Examples 0 and 1: the 5 tokens right-padded with two different fillings; example 2: the same tokens
    scattered between padding. All must give the outputs of the unpadded 5-token sequence there."""
    n, length = 12, 5
    v, tokens = random_params(spec, n), inputs(1, length)
    holes = np.array([False, True, True, False, False, True, False, True, False, False, True, False])
    mask = jnp.asarray(np.stack([np.arange(n) < length, np.arange(n) < length, holes]))
    x = inputs(3, n, seed=7) * 2  # the padding values
    x = x.at[:2, :length].set(tokens[0]).at[2, np.flatnonzero(holes)].set(tokens[0])
    y, expected = apply(spec, v, x, mask), apply(spec, v, tokens)[0]
    np.testing.assert_allclose(y[0, :length], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y[1, :length], expected, rtol=1e-4, atol=1e-5)
    if not spec.startswith("linformer"):  # all but linformer ignore where the padding is
        np.testing.assert_allclose(y[2, holes], expected, rtol=1e-4, atol=1e-5)
    no_mask = jnp.ones_like(mask)  # (same shapes: the compiled function is reused)
    assert not np.allclose(apply(spec, v, x, no_mask)[0, :length], expected, atol=1e-3)  # without the mask it leaks


# ----------------------------------------------------------------------------------------------- jit, grad, dropout

@pytest.mark.parametrize("spec", ALL_KINDS)
def test_n_37_through_jit_and_grad(spec):
    n = 37
    v, x = random_params(spec, n, scale=0.3), inputs(2, n)
    mask = jnp.arange(n)[None] < jnp.asarray([[n], [30]])
    module = make_attention(spec, HEADS)

    @jax.jit
    def loss_and_grads(v, x):
        loss = lambda v, x: jnp.sum(jnp.where(mask[..., None], module.apply(v, x, mask), 0.0) ** 2)
        return jax.value_and_grad(loss, argnums=(0, 1))(v, x)

    loss, (gv, gx) = loss_and_grads(v, x)
    np.testing.assert_allclose(loss, np.sum(apply(spec, v, x, mask)[np.asarray(mask)] ** 2), rtol=1e-4)
    for g in jax.tree.leaves((gv, gx)):
        assert np.all(np.isfinite(g)) and np.any(g != 0)
    np.testing.assert_array_equal(np.asarray(gx)[1, 30:], 0.0)  # padded tokens get no gradient


@pytest.mark.parametrize("spec", ["dct_fft-3"])
def test_gradients_by_finite_differences(spec):
    n = 5
    v, x = random_params(spec, n, scale=0.3), inputs(1, n)
    check_grads(lambda x: jitted_apply(spec)(v, x), (x,), order=1, modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.parametrize("spec", ["dct-0.5", "nystrom-0.5"])
def test_attention_dropout_only_in_training(spec):
    n = 10
    v, x = random_params(spec, n), inputs(1, n)
    module = jitted_apply(spec, dropout_rate=0.5)
    eval_out = module(v, x, None, train=False)
    np.testing.assert_allclose(np.asarray(eval_out), apply(spec, v, x), atol=1e-6)
    train_out = module(v, x, None, train=True, rngs={"dropout": RNG})
    assert not np.allclose(np.asarray(train_out), np.asarray(eval_out), atol=1e-3)


def test_checkpoint_moves_between_kinds():
    shapes = {spec: jax.tree.map(jnp.shape, random_params(spec, 20)) for spec in ALL_KINDS}
    vanilla = shapes.pop("vanilla")
    linformer = shapes.pop("linformer-0.25")["params"]
    assert all(s == vanilla for s in shapes.values())
    assert linformer.pop("seq_proj_k") == linformer.pop("seq_proj_v") == (20, 5)
    assert {"params": linformer} == vanilla


def test_encoder_block_builds_its_attention_from_the_spec():
    x = inputs(1, 9)
    block = EncoderBlock(HEADS, 2.0, attention="dct-0.5")
    v = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(0), x, False))
    assert set(v["params"]["attn"]) == {"qkv", "proj"}
    with pytest.raises(ValueError, match="attention_fn is only used with attention='vanilla'"):
        EncoderBlock(HEADS, attention="dct", attention_fn=lambda *a: a[2]).init(jax.random.PRNGKey(0), x, False)
    with pytest.raises(ValueError, match="unknown kind 'dtc'"):
        EncoderBlock(HEADS, attention="dtc").init(jax.random.PRNGKey(0), x, False)
