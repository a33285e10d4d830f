"""Report 003 transformer variants for segmentation: class-token cross-attention (vs numpy, equivariance,
masking, pluggable kernel) and the latent self-attention branch (LatentTransformer as a map)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.layers.attention import dot_product_attention
from jaxvision.layers.cross_attention import ClassTokenCrossAttention, MultiHeadCrossAttention
from jaxvision.layers.latent_transformer import LatentTransformer

EPS = 1e-6  # transformer.LN_EPS
erf = np.vectorize(math.erf)


def random_init(m, *args, seed=0, scale=0.5, **kw):
    """Variables of `m` drawn at random without compiling an init (LayerNorm scales and biases too, so no
    term is trivially 0 or 1)."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), *args, **kw))
    return jax.tree.map(lambda p: jnp.asarray(r.normal(size=p.shape) * scale, jnp.float32), shapes)


def jit_apply(m):
    """`m.apply` compiled once per call signature (faster than op-by-op dispatch on a small CPU)."""
    return jax.jit(m.apply, static_argnames=("train", "as_map"))


def np_ln(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_heads_attention(q, k, v, heads, key_mask=None):
    """q [Nq, D], k and v [Nk, D] -> [Nq, D]: per head (contiguous D / heads channels) softmax(q k^T / sqrt(hd)) v."""
    hd = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        s = slice(h * hd, (h + 1) * hd)
        logits = q[:, s] @ k[:, s].T / math.sqrt(hd)
        if key_mask is not None:
            logits = np.where(key_mask[None, :], logits, -np.inf)
        outs.append(np_softmax(logits) @ v[:, s])
    return np.concatenate(outs, -1)


def np_mlp_residual(t, bp):
    """t + fc2(gelu(fc1(norm2(t)))), the second half of every block."""
    return t + np_dense(np_gelu(np_dense(np_ln(t, bp["norm2"]), bp["mlp"]["fc1"])), bp["mlp"]["fc2"])


def np_cross_attention(x, ctx, p, heads, key_mask=None):
    """x [Nq, D], ctx [Nk, D] -> [Nq, D]: q/k/v projections, attention per head, concat, proj."""
    out = np_heads_attention(np_dense(x, p["q"]), np_dense(ctx, p["k"]), np_dense(ctx, p["v"]), heads, key_mask)
    return np_dense(out, p["proj"])


def np_class_token_logits(features, p, num_layers, heads):
    """Independent numpy forward of ClassTokenCrossAttention for one image [h, w, C] (C == dim)."""
    h, w, c = features.shape
    feats = features.astype(np.float64)
    ctx = feats.reshape(h * w, c)
    t = np.asarray(p["class_tokens"], np.float64)
    for i in range(num_layers):
        bp = p[f"blocks_{i}"]
        t = t + np_cross_attention(np_ln(t, bp["norm_q"]), np_ln(ctx, bp["norm_kv"]), bp["attn"], heads)
        t = np_mlp_residual(t, bp)
    return np.einsum("kc,hwc->hwk", t, feats)


@pytest.mark.parametrize("num_heads,num_layers,num_classes", [(1, 1, 1), (2, 2, 3)])
def test_class_token_cross_attention_matches_numpy(num_heads, num_layers, num_classes):
    m = ClassTokenCrossAttention(num_classes, dim=8, num_heads=num_heads, num_layers=num_layers)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 3, 8))
    v = random_init(m, x, train=False)
    out = jit_apply(m)(v, x, train=False)
    assert out.shape == (2, 2, 3, num_classes) and out.dtype == jnp.float32
    for b in range(2):
        ref = np_class_token_logits(np.asarray(x[b]), v["params"], num_layers, num_heads)
        np.testing.assert_allclose(np.asarray(out[b]), ref, rtol=2e-4, atol=2e-4)


def test_class_tokens_and_feature_projection():
    m = ClassTokenCrossAttention(num_classes=5, dim=16, num_heads=2, num_layers=2, expansion=4)
    v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((2, 4, 8, 32)), train=False))
    p = v["params"]
    assert p["class_tokens"].shape == (5, 16)
    assert p["feature_proj"]["kernel"].shape == (32, 16)  # C=32 != dim: linear projection, the report's 512 case
    assert sorted(k for k in p if k.startswith("blocks_")) == ["blocks_0", "blocks_1"]
    blk = jax.tree.map(lambda s: s.shape, p["blocks_0"])
    assert set(blk) == {"norm_q", "norm_kv", "attn", "norm2", "mlp"}  # separate query and key/value norms
    assert blk["attn"]["k"]["kernel"] == (16, 16) and blk["mlp"]["fc1"]["kernel"] == (16, 64)
    same = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 16)), train=False))
    assert "feature_proj" not in same["params"]
    out = jax.eval_shape(lambda v: m.apply(v, jnp.zeros((2, 4, 8, 32)), train=False), v)
    assert out.shape == (2, 4, 8, 5)


def test_logits_equivariant_to_pixel_permutation():
    m = ClassTokenCrossAttention(num_classes=3, dim=16, num_heads=2, num_layers=2)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 8, 24))
    v = random_init(m, x, train=False)
    perm = np.random.default_rng(0).permutation(32)
    xp = x.reshape(2, 32, 24)[:, perm].reshape(2, 4, 8, 24)
    apply = jit_apply(m)
    out, outp = apply(v, x, train=False), apply(v, xp, train=False)
    np.testing.assert_allclose(np.asarray(outp).reshape(2, 32, 3), np.asarray(out).reshape(2, 32, 3)[:, perm],
                               rtol=1e-4, atol=1e-4)


def test_cross_attention_key_mask_equals_dropping_keys():
    attn = MultiHeadCrossAttention(num_heads=2)
    x, ctx = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 8)), jax.random.normal(jax.random.PRNGKey(1), (1, 5, 8))
    v = random_init(attn, x, ctx)
    keep = np.array([True, False, True, True, False])
    masked = jit_apply(attn)(v, x, ctx, jnp.asarray(keep)[None])
    np.testing.assert_allclose(np.asarray(masked), np.asarray(jit_apply(attn)(v, x, ctx[:, keep])), rtol=1e-5,
                               atol=1e-6)
    ref = np_cross_attention(np.asarray(x[0], np.float64), np.asarray(ctx[0], np.float64), v["params"], 2, keep)
    np.testing.assert_allclose(np.asarray(masked[0]), ref, rtol=1e-4, atol=1e-5)


def test_cross_attention_uses_the_pluggable_kernel():
    calls = []

    def zero_kernel(q, k, v, mask, dropout):
        calls.append((q.shape, k.shape, v.shape))
        return jnp.zeros_like(q)

    m = ClassTokenCrossAttention(num_classes=2, dim=8, num_heads=2, num_layers=1, attention_fn=zero_kernel)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 3, 8))
    v = random_init(m, x, train=False)
    calls.clear()
    jit_apply(m)(v, x, train=False)
    assert calls == [((1, 2, 2, 4), (1, 2, 6, 4), (1, 2, 6, 4))]  # [B, heads, N, head_dim]; 2 tokens, 6 pixels
    # A kernel that returns 0 leaves the attention output at its projection bias.
    attn = MultiHeadCrossAttention(2, attention_fn=zero_kernel)
    va = random_init(attn, jnp.ones((1, 2, 8)), jnp.ones((1, 4, 8)))
    out = jit_apply(attn)(va, jnp.ones((1, 2, 8)), jnp.ones((1, 4, 8)))
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(va["params"]["proj"]["bias"], (1, 2, 8)))


def test_attention_dropout_only_in_training():
    m = ClassTokenCrossAttention(num_classes=3, dim=8, num_heads=2, num_layers=1, dropout=0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 4, 8))
    v = random_init(m, x, train=False)
    apply = jit_apply(m)
    np.testing.assert_array_equal(apply(v, x, train=False), apply(v, x, train=False))
    a = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b) and not np.allclose(a, apply(v, x, train=False))


def test_class_token_validation():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ClassTokenCrossAttention(num_classes=3, dim=10, num_heads=4)


def test_latent_self_attention_map_for_the_segmentation_branch():
    """Report 003 Code Snippet 10: ASPP features -> 16x16 latents (here 4x4) -> blocks -> [B, E, E, C]."""
    m = LatentTransformer(num_latents=16, num_heads=2, num_layers=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16, 16))
    v = random_init(m, x, train=False)
    assert "latent_proj" not in v["params"]  # dim None keeps the ASPP width
    apply = jit_apply(m)
    out_map, tokens = apply(v, x, train=False, as_map=True), apply(v, x, train=False)
    assert out_map.shape == (2, 4, 4, 16) and tokens.shape == (2, 16, 16)
    np.testing.assert_array_equal(out_map.reshape(2, 16, 16), tokens)  # row-major, as the report's view(B, E, E, C)


def test_full_grid_self_attention_is_permutation_equivariant():
    """num_latents=None: one token per pixel, no position embedding -> permuting pixels permutes outputs."""
    m = LatentTransformer(num_latents=None, dim=16, num_heads=2, num_layers=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8, 16))
    v = random_init(m, x, train=False)
    perm = np.random.default_rng(1).permutation(32)
    apply = jit_apply(m)
    out = apply(v, x, train=False, as_map=True)
    outp = apply(v, x.reshape(2, 32, 16)[:, perm].reshape(2, 4, 8, 16), train=False, as_map=True)
    assert out.shape == (2, 4, 8, 16)
    np.testing.assert_allclose(np.asarray(outp).reshape(2, 32, 16), np.asarray(out).reshape(2, 32, 16)[:, perm],
                               rtol=1e-5, atol=1e-5)


def test_latent_transformer_uses_the_pluggable_kernel():
    seen = []

    def kernel(q, k, v, mask, dropout):
        seen.append(q.shape)
        return dot_product_attention(q, k, v, mask, dropout)

    m = LatentTransformer(num_latents=4, num_heads=2, num_layers=2, attention_fn=kernel)
    jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8)), train=False))
    assert seen == [(1, 2, 4, 4)] * 2
