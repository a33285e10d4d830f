"""Adaptive depth head (report 003 problem 4): report parameter counts, LatentsExtractor, a numpy forward of the
whole head, bin arithmetic by hand, AdaBins bounds, positional-embedding variants, gradients, a jitted step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.layers.adaptive_depth import AdaptiveDepthHead, adabins_edges, bin_depth
from jaxvision.layers.attention import MultiHeadSelfAttention
from jaxvision.layers.latent_transformer import LatentTransformer, extract_latents
from test_cross_attention import (jit_apply, np_dense, np_heads_attention, np_ln, np_mlp_residual, np_softmax,
                                  random_init)
from jaxvision.models import count_params

LATENT, PIXEL, OUT = (2, 4, 8, 32), (2, 4, 8, 16), (16, 32)  # lowest features, stride-4 features, image size


def tiny_head(**kw):
    cfg = dict(num_bins=4, dim=16, query_dim=16, num_heads=2, num_layers=1, expansion=4)
    cfg.update(kw)
    return AdaptiveDepthHead(**cfg)


def inputs(seed=0, latent=LATENT, pixel=PIXEL):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, latent), jax.random.normal(k2, pixel)


def head_vars(head, latent, pixel, out_size=OUT, **kw):
    return random_init(head, latent, pixel, out_size, train=False, **kw)


def head_apply(head):
    """Jitted `head.apply(v, latent, pixel, out_size, train, return_bins=False, rngs=None)`."""
    f = jax.jit(lambda v, latent, pixel, out_size, train, return_bins, rngs: head.apply(
        v, latent, pixel, out_size, train, return_bins, rngs=rngs), static_argnums=(3, 4, 5))
    return lambda v, latent, pixel, out_size, train, return_bins=False, rngs=None: f(
        v, latent, pixel, tuple(out_size), train, return_bins, rngs)


# ---------------------------------------------------------------- architecture vs the report

def test_param_counts_match_report_table3():
    """Table 3 (256 channels, 4 heads, expansion 4, 3 blocks, 256 bins): transformer blocks 2,369,280,
    Conv3x3 590,080, bin projection 257 -- here with 256-channel decoder features (no channel projection)."""
    head = AdaptiveDepthHead(num_bins=256, dim=256, num_heads=4, num_layers=3, expansion=4)
    shapes = jax.eval_shape(lambda: head.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 256)),
                                              jnp.zeros((1, 16, 16, 256)), (64, 64), train=False))["params"]
    assert set(shapes) == {"transformer", "bin_proj", "conv3x3"}
    assert count_params(shapes["transformer"]) == 2_369_280
    assert count_params(shapes["conv3x3"]) == 590_080 and count_params(shapes["bin_proj"]) == 257
    # Lowest ResNet-18/34 features (512 channels): Linear 512 -> 256 before the blocks.
    low = jax.eval_shape(lambda: head.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 512)),
                                           jnp.zeros((1, 16, 16, 256)), (64, 64), train=False))["params"]
    assert count_params(low["transformer"]["latent_proj"]) == 512 * 256 + 256
    # dim 512: no projection before, Linear 512 -> 256 after the bin projection for the similarity.
    wide = AdaptiveDepthHead(num_bins=256, dim=512, num_heads=8)
    p = jax.eval_shape(lambda: wide.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 512)),
                                         jnp.zeros((1, 16, 16, 256)), (64, 64), train=False))["params"]
    assert "latent_proj" not in p["transformer"] and p["bin_reproj"]["kernel"].shape == (512, 256)
    assert p["bin_proj"]["kernel"].shape == (512, 1)


def test_latents_extractor_is_bilinear_downsampling_row_major():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    lat = extract_latents(x, 4)  # 4x4 -> 2x2: half-pixel bilinear by 2 is the 2x2 mean
    pooled = np.asarray(x).reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4)).reshape(2, 4, 3)
    np.testing.assert_allclose(np.asarray(lat), pooled, rtol=1e-6)
    assert extract_latents(x, 16).shape == (2, 16, 3) and extract_latents(x, None).shape == (2, 16, 3)
    assert extract_latents(jnp.zeros((1, 3, 5, 2)), 64).shape == (1, 64, 2)  # smaller maps are upsampled
    with pytest.raises(ValueError, match="positive square"):
        extract_latents(x, 8)


def test_config_errors():
    with pytest.raises(ValueError, match="positive square"):
        tiny_head(num_bins=6)
    with pytest.raises(ValueError, match="projection"):
        tiny_head(projection="conv1d")
    with pytest.raises(ValueError, match="pos_embed"):
        tiny_head(pos_embed="both")
    with pytest.raises(ValueError, match="bins"):
        tiny_head(bins="log")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        tiny_head(bins="adabins", min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="projection is 'none'"):
        jax.eval_shape(lambda: tiny_head(projection="none").init(jax.random.PRNGKey(0), *inputs(), OUT, train=False))


# ---------------------------------------------------------------- bin arithmetic by hand

def test_bin_depth_by_hand():
    """Two bins at 2 m and 10 m; pixel 0 has logits (ln 3, 0) -> p = (3/4, 1/4) -> 4 m;
    pixel 1 has logits (0, 2) -> p = (1, e^2) / (1 + e^2)."""
    queries = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])  # [1, 1, 2, 2]
    bins = jnp.array([[[np.log(3.0), 0.0], [0.0, 2.0]]])  # [1, 2 bins, 2]
    depth = bin_depth(queries, bins, jnp.array([[2.0, 10.0]]))
    e2 = np.exp(2.0)
    np.testing.assert_allclose(np.asarray(depth), [[[4.0, (2.0 + 10.0 * e2) / (1 + e2)]]], rtol=1e-6)


def test_adabins_edges_by_hand():
    """Scores (0, ln 3) -> widths (1/4, 3/4) of [2, 10] = (2, 6) -> edges 2, 4, 10."""
    edges = adabins_edges(jnp.array([[0.0, np.log(3.0)], [5.0, 5.0]]), 2.0, 10.0)
    np.testing.assert_allclose(np.asarray(edges), [[2.0, 4.0, 10.0], [2.0, 6.0, 10.0]], rtol=1e-6)


@pytest.mark.parametrize("bins", ["linear", "adabins"])
def test_constant_queries_give_the_mean_of_the_centres(bins):
    """A zero Conv3x3 makes every similarity 0: each pixel is the plain mean of its image's bin centres."""
    head = tiny_head(bins=bins, min_depth=1.0, max_depth=9.0)
    latent, pixel = inputs()
    v = head_vars(head, latent, pixel)
    v["params"]["conv3x3"] = jax.tree.map(jnp.zeros_like, v["params"]["conv3x3"])
    if bins == "adabins":  # a zero bin projection too: equal widths, centres symmetric about (min + max) / 2
        v["params"]["bin_proj"] = jax.tree.map(jnp.zeros_like, v["params"]["bin_proj"])
    depth, aux = head_apply(head)(v, latent, pixel, OUT, train=False, return_bins=True)
    assert depth.shape == (2, *OUT) and depth.dtype == jnp.float32 and aux["centres"].shape == (2, 4)
    expected = np.broadcast_to(np.asarray(aux["centres"]).mean(-1)[:, None, None], depth.shape)
    np.testing.assert_allclose(np.asarray(depth), expected, rtol=1e-5)
    if bins == "adabins":
        np.testing.assert_allclose(np.asarray(depth), 5.0, rtol=1e-5)  # (min + max) / 2


# ---------------------------------------------------------------- the whole head against numpy

def np_encoder_block(x, bp, heads, query_pos=None, input_pos=None):
    """transformer.EncoderBlock in numpy: fused qkv (q | k | v, heads contiguous), positional embeddings as the report."""
    d = x.shape[-1]
    qkv = np_dense(np_ln(x if input_pos is None else x + input_pos, bp["norm1"]), bp["attn"]["qkv"])
    q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
    if query_pos is not None:
        q = q + query_pos
    x = x + np_dense(np_heads_attention(q, k, v, heads), bp["attn"]["proj"])
    return np_mlp_residual(x, bp)


def np_conv3x3(x, p):
    h, w, _ = x.shape
    pad = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    kernel = np.asarray(p["kernel"], np.float64)
    out = sum(pad[dy:dy + h, dx:dx + w] @ kernel[dy, dx] for dy in range(3) for dx in range(3))
    return out + np.asarray(p["bias"])


def np_head(head, latent, pixel, p):
    """One image's depth at the pixel features' resolution and its bin centres, in numpy (float64)."""
    t = p["transformer"]
    tokens = np.asarray(extract_latents(latent[None], head.num_bins)[0], np.float64)
    if "latent_proj" in t:
        proj = t["latent_proj"]
        tokens = np_dense(tokens, {"kernel": np.asarray(proj["kernel"]).reshape(-1, head.dim), "bias": proj["bias"]})
    pos = None if head.pos_embed is None else np.asarray(t["pos_embed"][0], np.float64)
    query_pos, input_pos = (pos, None) if head.pos_embed == "query" else (None, pos)
    for i in range(head.num_layers):
        tokens = np_encoder_block(tokens, t[f"blocks_{i}"], head.num_heads, query_pos, input_pos)
    raw = tokens @ np.asarray(p["bin_proj"]["kernel"], np.float64)[:, 0] + float(p["bin_proj"].get("bias", [0.0])[0])
    centres = raw
    if head.bins == "adabins":
        edges = head.min_depth + np.concatenate([[0.0], np.cumsum(np_softmax(raw) * (head.max_depth - head.min_depth))])
        centres = (edges[:-1] + edges[1:]) / 2
    if "bin_reproj" in p:
        tokens = np_dense(tokens, p["bin_reproj"])
    probs = np_softmax(np_conv3x3(np.asarray(pixel, np.float64), p["conv3x3"]) @ tokens.T)
    return probs @ centres, centres


@pytest.mark.parametrize("cfg", [
    dict(),  # the report's final choice: 256 -> dim projection by a Linear, no position embedding
    dict(dim=32, num_heads=4, num_layers=2, pos_embed="query", projection="conv"),  # the 512 variant in small
    dict(bins="adabins", pos_embed="input", min_depth=0.5, max_depth=20.0),
])
def test_head_matches_numpy(cfg):
    head = tiny_head(**cfg)
    latent, pixel = inputs(1)
    v = random_init(head, latent, pixel, PIXEL[1:3], train=False, scale=0.3)
    depth, aux = head_apply(head)(v, latent, pixel, PIXEL[1:3], train=False, return_bins=True)
    for b in range(2):
        ref, centres = np_head(head, np.asarray(latent[b]), np.asarray(pixel[b]), v["params"])
        np.testing.assert_allclose(np.asarray(aux["centres"][b]), centres, rtol=2e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(depth[b]), ref, rtol=2e-4, atol=1e-4)


def test_query_pos_matches_numpy():
    attn = MultiHeadSelfAttention(2)
    x, pos = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8)), jax.random.normal(jax.random.PRNGKey(1), (1, 5, 8))
    v = random_init(attn, x)
    out = jit_apply(attn)(v, x, None, False, pos)
    p = v["params"]
    for b in range(2):
        qkv = np_dense(np.asarray(x[b], np.float64), p["qkv"])
        ref = np_heads_attention(qkv[:, :8] + np.asarray(pos[0]), qkv[:, 8:16], qkv[:, 16:], 2)
        np.testing.assert_allclose(np.asarray(out[b]), np_dense(ref, p["proj"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pos_embed", ["query", "input"])
def test_zero_position_embedding_is_no_position_embedding(pos_embed):
    head, plain = tiny_head(pos_embed=pos_embed), tiny_head()
    latent, pixel = inputs()
    v = head_vars(head, latent, pixel)
    assert v["params"]["transformer"]["pos_embed"].shape == (1, 4, 16)
    zero = jax.tree.map(lambda x: x, v)
    zero["params"]["transformer"]["pos_embed"] = jnp.zeros((1, 4, 16))
    without = {"params": {**v["params"], "transformer": {k: x for k, x in v["params"]["transformer"].items()
                                                        if k != "pos_embed"}}}
    apply = head_apply(head)
    np.testing.assert_allclose(apply(zero, latent, pixel, OUT, train=False),
                               head_apply(plain)(without, latent, pixel, OUT, train=False), rtol=1e-5, atol=1e-5)
    assert not np.allclose(apply(v, latent, pixel, OUT, train=False), apply(zero, latent, pixel, OUT, train=False))


# ---------------------------------------------------------------- bounds, gradients, a jitted step with dropout

def test_adabins_depth_stays_in_range_and_widths_fill_it():
    head = tiny_head(bins="adabins", min_depth=0.5, max_depth=80.0)
    latent, pixel = inputs(3)
    v = random_init(head, latent, pixel, OUT, train=False, scale=3.0)  # large weights: saturated softmaxes
    depth, aux = head_apply(head)(v, latent * 10, pixel * 10, OUT, train=False, return_bins=True)
    widths = np.diff(np.asarray(aux["edges"]), axis=-1)
    assert np.all(widths >= 0)
    np.testing.assert_allclose(widths.sum(-1), 79.5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["edges"])[:, [0, -1]], [[0.5, 80.0]] * 2, rtol=1e-6)
    d = np.asarray(depth)
    assert np.all(np.isfinite(d)) and d.min() >= 0.5 - 1e-4 and d.max() <= 80.0 + 1e-3
    assert d.max() - d.min() > 1.0  # not collapsed to one value


def mse(depth, target):
    return jnp.mean(jnp.square(depth - target))


@pytest.mark.parametrize("cfg", [dict(pos_embed="query", projection="conv"),
                                 dict(bins="adabins", dim=32, pos_embed="input", max_depth=50.0)])
def test_gradients_reach_every_parameter(cfg):
    head = tiny_head(**cfg)
    latent, pixel = inputs()
    v = head_vars(head, latent, pixel)
    target = jnp.full((2, *OUT), 5.0)
    grads = jax.jit(jax.grad(lambda v: mse(head.apply(v, latent, pixel, OUT, train=False), target)))(v)
    norms = {jax.tree_util.keystr(k): float(jnp.linalg.norm(g)) for k, g in jax.tree_util.tree_leaves_with_path(grads)}
    assert all(np.isfinite(n) and n > 0 for n in norms.values()), norms


def test_jitted_sgd_steps_lower_the_loss():
    """From the real initialisation (bin_proj bias 10 m: the project's starting depth), with attention dropout."""
    head = tiny_head(dropout=0.2)
    latent, pixel = inputs()
    v = jax.jit(lambda: head.init(jax.random.PRNGKey(0), latent, pixel, OUT, train=False))()
    target = jnp.full((2, *OUT), 5.0)

    @jax.jit
    def step(v, key):
        def loss_fn(v):
            depth = head.apply(v, latent, pixel, OUT, train=True, rngs={"dropout": key})
            return mse(depth, target), depth
        (loss, depth), g = jax.value_and_grad(loss_fn, has_aux=True)(v)
        return jax.tree.map(lambda p, g: p - 0.05 * g, v, g), loss, depth

    _, _, depth0 = step(v, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(depth0), 10.0, atol=2.0)
    assert not np.array_equal(depth0, step(v, jax.random.PRNGKey(1))[2])  # dropout acts in training
    losses = []
    for i in range(4):
        v, loss, _ = step(v, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_latent_transformer_projection_variants_share_the_map():
    """'conv' (kernel-1 Conv1d) and 'linear' are the same map given the same weights."""
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8))
    lin, conv = (LatentTransformer(4, dim=4, num_heads=2, num_layers=1, projection=p) for p in ("linear", "conv"))
    v = random_init(lin, x, train=False)
    vc = jax.tree.map(lambda a: a, v)
    vc["params"]["latent_proj"] = {"kernel": v["params"]["latent_proj"]["kernel"][None],
                                   "bias": v["params"]["latent_proj"]["bias"]}
    np.testing.assert_allclose(jit_apply(conv)(vc, x, train=False), jit_apply(lin)(v, x, train=False), rtol=1e-5,
                               atol=1e-6)
