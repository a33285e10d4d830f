"""Self-attention over a feature map's latents (report 003, problems 4 and 5).

`extract_latents` is the reports' LatentsExtractor: a bilinear resize (align_corners=False, no
antialiasing, as F.interpolate) of the feature map to an E x E grid, E = sqrt(num_latents), flattened
row-major to [B, E*E, C]. `LatentTransformer` runs pre-norm transformer blocks (transformer.EncoderBlock,
which is the reports' TransformerBlock: x + attn(LN(x)), x + MLP(LN(x)), GELU MLP of `expansion` x
width) over those latents, after an optional channel projection and with an optional learnable
positional embedding. It gives the learnable bins of the adaptive depth head (report 003 problem 4)
and, with `as_map=True`, the self-attention segmentation branch of problem 5 (ASPP features ->
latents -> blocks -> [B, E, E, C] map -> the DeepLabv3+ decoder, Code Snippet 10).
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.attention import dot_product_attention, trunc_normal_02
from jaxvision.layers.decoder import resize_bilinear
from jaxvision.layers.transformer import EncoderBlock

PROJECTIONS = ("linear", "conv", "none")
POS_EMBEDS = (None, "query", "input")


def latent_grid(num_latents: int) -> int:
    """The edge E of the E x E latent grid; raises unless `num_latents` is a positive square."""
    edge = math.isqrt(num_latents) if num_latents > 0 else 0
    if edge * edge != num_latents or edge < 1:
        raise ValueError(f"num_latents {num_latents} must be a positive square (the latents are an E x E grid), "
                         f"e.g. 256")
    return edge


def check_latent_options(num_latents: int | None, dim: int | None, num_heads: int, projection: str,
                         pos_embed: str | None) -> None:
    """Raises a ValueError naming the first bad LatentTransformer option."""
    if num_latents is not None:
        latent_grid(num_latents)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection {projection!r} is not one of {PROJECTIONS}")
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"pos_embed {pos_embed!r} is not one of {POS_EMBEDS}")
    if dim is not None and (num_heads < 1 or dim % num_heads):
        raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")


def extract_latents(x: jnp.ndarray, num_latents: int | None) -> jnp.ndarray:
    """[B, h, w, C] -> [B, num_latents, C]: bilinear resize to E x E (E = sqrt(num_latents)), row-major
    flatten. `num_latents=None` keeps the h x w grid (N = h*w). Output dtype is x's."""
    b, h, w, c = x.shape
    if num_latents is not None:
        edge = latent_grid(num_latents)
        if (h, w) != (edge, edge):
            x = resize_bilinear(x.astype(jnp.float32), (edge, edge)).astype(x.dtype)
    return x.reshape(b, -1, c)


class LatentTransformer(nn.Module):
    """Latents of a feature map through `num_layers` pre-norm self-attention blocks.

    Call: `(x [B, h, w, C], train, as_map=False)` -> tokens [B, N, dim] (N = num_latents, or h*w when
    `num_latents` is None), or with `as_map=True` the map [B, E, E, dim] (E x E = the latent grid).
    `dim` None keeps C. When C != dim the latents are projected: `projection` 'linear' (a Dense, the
    report's choice) or 'conv' (a kernel-1 Conv1d over the tokens, the report's alternative; the same
    map); 'none' requires C == dim. `pos_embed`: None (the report's final choice), 'query' (a learnable
    [1, N, dim] embedding added to the projected queries of every block, the report's snippet 8) or
    'input' (added to the tokens entering every block's attention norm). `dropout` drops attention
    weights in training (needs a 'dropout' rng). `expansion` is the MLP width ratio. `attention` is the
    blocks' attention spec (jaxvision/layers/efficient_attention.py: "vanilla", "dct-0.25", ...).
    """

    num_latents: int | None = 256
    dim: int | None = None
    num_heads: int = 4
    num_layers: int = 3
    expansion: float = 4.0
    dropout: float = 0.0
    projection: str = "linear"
    pos_embed: str | None = None
    attention_fn: Callable = dot_product_attention
    dtype: jnp.dtype = jnp.float32
    attention: str = "vanilla"

    def __post_init__(self):
        check_latent_options(self.num_latents, self.dim, self.num_heads, self.projection, self.pos_embed)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, as_map: bool = False) -> jnp.ndarray:
        b, h, w, c = x.shape
        dim = self.dim or c
        tokens = extract_latents(x, self.num_latents).astype(self.dtype)
        if c != dim:
            if self.projection == "none":
                raise ValueError(f"LatentTransformer: features have {c} channels, dim is {dim} and projection "
                                 f"is 'none'")
            if self.projection == "linear":
                tokens = nn.Dense(dim, dtype=self.dtype, kernel_init=trunc_normal_02, name="latent_proj")(tokens)
            else:
                tokens = nn.Conv(dim, (1,), dtype=self.dtype, name="latent_proj")(tokens)
        query_pos = input_pos = None
        if self.pos_embed is not None:
            pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, tokens.shape[1], dim))
            query_pos, input_pos = (pos, None) if self.pos_embed == "query" else (None, pos)
        for i in range(self.num_layers):
            tokens = EncoderBlock(self.num_heads, self.expansion, attention_dropout_rate=self.dropout,
                                  dtype=self.dtype, attention_fn=self.attention_fn, attention=self.attention,
                                  name=f"blocks_{i}")(tokens, train, query_pos=query_pos, input_pos=input_pos)
        if not as_map:
            return tokens
        edge = latent_grid(self.num_latents) if self.num_latents is not None else None
        return tokens.reshape(b, *((edge, edge) if edge else (h, w)), dim)
