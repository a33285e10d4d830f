"""Vision Transformer (Dosovitskiy et al. 2021) in timm's `vit_*_patch16_224` layout, with a features mode.

Parameter names follow timm so weights map one to one: `patch_embed` (patch_embed.proj, a patch-size
conv with that stride), `cls_token`, `pos_embed` ([1, 1 + N, D], the class token's first),
`blocks_{i}` (blocks.{i}) with `norm1`, `attn/qkv|proj`, `norm2`, `mlp/fc1|fc2`, then `norm` and `head`.
A conv kernel is HWIO here and OIHW in PyTorch; Dense kernels are the transposed Linear weights.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.attention import trunc_normal_02
from jaxvision.layers.decoder import resize_bilinear
from jaxvision.layers.transformer import LN_EPS, EncoderBlock
from jaxvision.models.registry import register


def resize_pos_embed(pos_embed: jnp.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix_tokens: int = 1) -> jnp.ndarray:
    """Bilinearly resizes the patch part of `pos_embed` [1, prefix + oh * ow, D] to `new_grid`.

    The `num_prefix_tokens` leading embeddings (the class token's) are kept unchanged. Shapes are
    static, so this runs under jit; the same grid returns `pos_embed` itself.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = patches.reshape(patches.shape[0], old_grid[0], old_grid[1], patches.shape[-1])
    grid = resize_bilinear(grid.astype(jnp.float32), tuple(new_grid)).astype(pos_embed.dtype)
    return jnp.concatenate([prefix, grid.reshape(grid.shape[0], -1, grid.shape[-1])], axis=1)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@register("vit_base_patch16", hidden_size=768, depth=12, num_heads=12)
@register("vit_small_patch16", hidden_size=384, depth=12, num_heads=6)
@register("vit_tiny_patch16", hidden_size=192, depth=12, num_heads=3)
class VisionTransformer(nn.Module):
    """timm ViT with a class token. `num_classes` None or 0: no classifier head.

    `image_size` (int or (H, W)) sets the number of learned position embeddings, 1 + (H/p)(W/p);
    another input size (a multiple of `patch_size`) bilinearly resizes the patch position
    embeddings to its grid on the fly (the class token's is kept). Input H and W must be multiples
    of `patch_size`. `attention` is every block's attention spec
    (`jaxvision.layers.efficient_attention.make_attention`: "vanilla", "dct-0.25", "nystrom-0.125", ...);
    its sequence is the class token then the patches, n = 1 + (H/p)(W/p), so "dct-0.25" at 224 keeps
    round(0.25 * 197) = 49 DCT coefficients. The parameters are the same for every kind but linformer.
    """

    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    num_classes: int | None = 1000
    image_size: int | tuple[int, int] = 224
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention: str = "vanilla"

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"ViT hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if any(s % self.patch_size for s in _pair(self.image_size)):
            raise ValueError(f"ViT image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        """Logits [B, num_classes] float32 (the normed class token without a head), or with
        `features=True` the dict {patch_size: [B, H/p, W/p, D]} of normed patch tokens."""
        b, h, w, _ = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"ViT input size {h}x{w} is not a multiple of patch_size {p}")
        grid = (h // p, w // p)
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="patch_embed")(x.astype(self.dtype))
        x = x.reshape(b, grid[0] * grid[1], self.hidden_size)

        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.hidden_size))
        base_grid = tuple(s // p for s in _pair(self.image_size))
        pos = self.param("pos_embed", trunc_normal_02, (1, 1 + base_grid[0] * base_grid[1], self.hidden_size))
        pos = resize_pos_embed(pos, base_grid, grid)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.hidden_size)).astype(self.dtype), x], axis=1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + pos.astype(self.dtype))

        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, self.mlp_ratio, self.qkv_bias, self.dropout_rate,
                             self.attention_dropout_rate, self.dtype, attention=self.attention,
                             name=f"blocks_{i}")(x, train)
        x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(x)
        if features:
            return {p: x[:, 1:].reshape(b, grid[0], grid[1], self.hidden_size)}
        x = x[:, 0]
        if self.num_classes:
            x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=trunc_normal_02, name="head")(x)
        return x.astype(jnp.float32)
