"""ViT: timm parameter counts, features mode, position-embedding resizing; multi-head self-attention vs numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision.models.vit  # noqa: F401  (registers the vit_* models)
from jaxvision.layers.attention import MultiHeadSelfAttention
from jaxvision.models import registry
from jaxvision.models.vit import VisionTransformer, resize_pos_embed
from conftest import abstract_init
from jaxvision.models import count_params




# timm's vit_{tiny,small,base}_patch16_224 with a 1000-class head.
@pytest.mark.parametrize("name,expected", [("vit_tiny_patch16", 5_717_416), ("vit_small_patch16", 22_050_664),
                                           ("vit_base_patch16", 86_567_656)])
def test_param_counts_match_timm(name, expected):
    assert count_params(abstract_init(registry.create(name, num_classes=1000), (1, 224, 224, 3))["params"]) == expected


def test_layout_follows_timm():
    p = abstract_init(registry.create("vit_tiny_patch16", num_classes=None), (1, 224, 224, 3))["params"]
    assert "head" not in p
    assert sorted(k for k in p if k.startswith("blocks_")) == sorted(f"blocks_{i}" for i in range(12))
    assert p["patch_embed"]["kernel"].shape == (16, 16, 3, 192)
    assert p["cls_token"].shape == (1, 1, 192) and p["pos_embed"].shape == (1, 197, 192)
    assert jax.tree.map(jnp.shape, p["blocks_0"]["attn"]) == {"qkv": {"kernel": (192, 576), "bias": (576,)},
                                                             "proj": {"kernel": (192, 192), "bias": (192,)}}
    assert p["blocks_0"]["mlp"]["fc1"]["kernel"].shape == (192, 768)


@pytest.mark.parametrize("image_size", [64, 224])  # 224: the 14x14 position embeddings are resized to 4x4
def test_features_mode_shape(image_size):
    model = registry.create("vit_tiny_patch16", num_classes=None, image_size=image_size)
    v = abstract_init(model, (1, 64, 64, 3))
    assert v["params"]["pos_embed"].shape == (1, 1 + (image_size // 16) ** 2, 192)
    feats = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3)), train=False, features=True), v)
    assert {k: f.shape for k, f in feats.items()} == {16: (1, 4, 4, 192)}
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False), v)
    assert logits.shape == (2, 192) and logits.dtype == jnp.float32


def test_small_vit_runs_jitted_at_another_size():
    model = VisionTransformer(hidden_size=16, depth=1, num_heads=2, patch_size=8, num_classes=5, image_size=32)
    r = np.random.default_rng(0)  # random parameters without compiling an init
    v = jax.tree.map(lambda s: jnp.asarray(r.normal(size=s.shape) * 0.1, s.dtype), abstract_init(model, (1, 32, 32, 3)))
    x = jnp.asarray(r.normal(size=(2, 48, 40, 3)), jnp.float32)
    both = jax.jit(lambda v, x: (model.apply(v, x, train=False), model.apply(v, x, train=False, features=True)))
    out, feats = both(v, x)
    assert out.shape == (2, 5) and bool(jnp.all(jnp.isfinite(out)))
    assert feats[8].shape == (2, 6, 5, 16)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        model.apply(v, jnp.zeros((1, 30, 32, 3)), train=False)


def test_pos_embed_resize_keeps_class_token():
    pos = jax.random.normal(jax.random.PRNGKey(0), (1, 1 + 14 * 14, 8))
    out = jax.jit(resize_pos_embed, static_argnums=(1, 2))(pos, (14, 14), (4, 6))
    assert out.shape == (1, 1 + 24, 8)
    np.testing.assert_array_equal(np.asarray(out[:, 0]), np.asarray(pos[:, 0]))
    assert resize_pos_embed(pos, (14, 14), (14, 14)) is pos
    # A constant grid stays constant under bilinear resizing.
    const = jnp.concatenate([pos[:, :1], jnp.full((1, 196, 8), 0.5)], axis=1)
    np.testing.assert_allclose(np.asarray(resize_pos_embed(const, (14, 14), (7, 3))[:, 1:]), 0.5, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- attention

def numpy_attention(x, p, num_heads, mask=None):
    b, n, d = x.shape
    hd = d // num_heads
    qkv = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(b, n, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    if mask is not None:
        logits = np.where(mask[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = (w @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    return out @ p["proj"]["kernel"] + p["proj"]["bias"]


def random_attention_params(d, seed=0):
    r = np.random.default_rng(seed)
    return {"qkv": {"kernel": r.normal(size=(d, 3 * d)) * 0.5, "bias": r.normal(size=3 * d) * 0.1},
            "proj": {"kernel": r.normal(size=(d, d)) * 0.5, "bias": r.normal(size=d) * 0.1}}


@pytest.mark.parametrize("num_heads", [1, 2])
def test_attention_matches_numpy(num_heads):
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    p = random_attention_params(4)
    attn = MultiHeadSelfAttention(num_heads)
    v = jax.eval_shape(lambda: attn.init(jax.random.PRNGKey(0), jnp.asarray(x)))
    assert jax.tree.map(jnp.shape, v["params"]) == jax.tree.map(np.shape, p)
    params = {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)}
    np.testing.assert_allclose(np.asarray(attn.apply(params, jnp.asarray(x))), numpy_attention(x, p, num_heads),
                               rtol=1e-4, atol=1e-5)
    mask = np.array([[True, True, False, True, False], [True] * 5])
    np.testing.assert_allclose(np.asarray(attn.apply(params, jnp.asarray(x), jnp.asarray(mask))),
                               numpy_attention(x, p, num_heads, mask), rtol=1e-4, atol=1e-5)


def test_padding_mask_hides_masked_tokens():
    attn = MultiHeadSelfAttention(2)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 8))
    v = attn.init(jax.random.PRNGKey(1), x)
    mask = jnp.asarray([[True, True, True, False, True, False]])
    y1 = attn.apply(v, x, mask)
    x2 = x.at[:, 3].set(100.0).at[:, 5].set(-7.0)  # change only the padded tokens
    y2 = attn.apply(v, x2, mask)
    keep = np.asarray(mask[0])
    np.testing.assert_allclose(np.asarray(y1)[:, keep], np.asarray(y2)[:, keep], rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(attn.apply(v, x2))[:, keep], np.asarray(y1)[:, keep])  # the mask matters


def test_attention_dropout_only_in_training():
    attn = MultiHeadSelfAttention(2, dropout_rate=0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 8))
    v = attn.init(jax.random.PRNGKey(1), x)
    eval_out = attn.apply(v, x, train=False)
    np.testing.assert_array_equal(np.asarray(eval_out), np.asarray(attn.apply(v, x)))
    train_out = attn.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(np.asarray(train_out), np.asarray(eval_out))
    with pytest.raises(ValueError, match="num_heads 3"):
        MultiHeadSelfAttention(3).init(jax.random.PRNGKey(0), x)


# ----------------------------------------------------------------------------------------------- attention kinds

def test_attention_kinds_share_the_vanilla_param_tree():
    shapes = {spec: jax.tree.map(jnp.shape, abstract_init(registry.create("vit_tiny_patch16", attention=spec),
                                                           (1, 224, 224, 3))["params"])
              for spec in ("vanilla", "dct-0.25", "dct_fft-0.5", "nystrom-0.125", "linformer-0.125")}
    linformer = shapes.pop("linformer-0.125")
    assert all(s == shapes["vanilla"] for s in shapes.values())
    # The spec reaches every block: linformer adds its sequence projections, [197, round(0.125 * 197)].
    for i in range(12):
        attn = linformer[f"blocks_{i}"]["attn"]
        assert attn.pop("seq_proj_k") == attn.pop("seq_proj_v") == (197, 25)
    assert linformer == shapes["vanilla"]


@pytest.mark.parametrize("spec", ["dct-0.25", pytest.param("dct_fft-0.5", marks=pytest.mark.slow)])
def test_dct_vit_tiny_runs_forward_and_grad(spec):
    # 64 x 64 input: n = 1 + 4 x 4 = 17 tokens, so n_bar = 4 ("dct-0.25") or 8 ("dct_fft-0.5")
    model = registry.create("vit_tiny_patch16", num_classes=3, image_size=64, attention=spec)
    r = np.random.default_rng(0)
    v = jax.tree.map(lambda s: jnp.asarray(r.normal(size=s.shape) * 0.05, s.dtype),
                     abstract_init(model, (1, 64, 64, 3)))
    x = jnp.asarray(r.uniform(size=(2, 64, 64, 3)), jnp.float32)
    loss, grads = jax.jit(jax.value_and_grad(lambda v: jnp.sum(model.apply(v, x, train=False) ** 2)))(v)
    assert np.isfinite(loss) and loss > 0
    g = grads["params"]
    assert np.all([np.all(np.isfinite(a)) for a in jax.tree.leaves(g)])
    assert float(jnp.abs(g["blocks_0"]["attn"]["qkv"]["kernel"]).max()) > 0  # the attention is on the gradient path
