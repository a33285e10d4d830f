"""BERT-style text encoder with a sparse MLM head or a [CLS] classifier (thesis ch. 4.5.1, "BERT-small-like").

Encoder (params under `encoder`): token embedding + position embedding (a learned table of `max_len`
rows, or fixed sinusoids) -> LayerNorm -> dropout -> `depth` pre-norm EncoderBlocks
(jaxvision/layers/transformer.py) with the attention kind `attention` ("vanilla", "dct-0.25", ...) ->
final LayerNorm. Tokens with id 0 ([PAD]) are masked out of the attention. The thesis' blocks are
post-norm (the original transformer); these are the shared pre-norm blocks.

Heads, outside `encoder`, so a checkpoint of either head initialises the other's encoder:
- `head="mlm"` (`mlm_head`): hidden states gathered at `mlm_positions` [B, P] only -> Dense(d) -> GELU ->
  LayerNorm -> logits through the token embedding (tied) plus a bias: [B, P, vocab]. Without positions
  every token is decoded: [B, N, vocab].
- `head="classification"` (`classifier`): the [CLS] token's hidden state -> Dense(d) -> tanh -> dropout ->
  Dense(1): one logit per sequence [B] (binary cross-entropy).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.attention import trunc_normal_02
from jaxvision.layers.transformer import LN_EPS, EncoderBlock
from jaxvision.models.registry import register
from jaxvision.text.tokenizer import PAD_ID

HEADS = ("mlm", "classification")
POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """Fixed position codes [length, width] (Vaswani et al.): sin on even channels, cos on odd ones, with
    wavelengths 2 pi * 10000^(2i / width)."""
    positions = np.arange(length, dtype=np.float64)[:, None]
    rates = 10000.0 ** (-np.arange(0, width, 2, dtype=np.float64) / width)
    codes = np.zeros((length, width), np.float64)
    codes[:, 0::2] = np.sin(positions * rates)
    codes[:, 1::2] = np.cos(positions * rates[:width // 2])
    return codes.astype(np.float32)


class BertEncoder(nn.Module):
    """Token ids [B, N] -> hidden states [B, N, width] (see the module docstring)."""

    vocab_size: int
    max_len: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    positions: str = "learned"
    attention: str = "vanilla"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.token_embed = nn.Embed(self.vocab_size, self.width, embedding_init=trunc_normal_02, dtype=self.dtype)
        if self.positions == "learned":
            self.pos_embed = self.param("pos_embed", trunc_normal_02, (self.max_len, self.width))
        self.embed_norm = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
        self.embed_dropout = nn.Dropout(self.dropout_rate)
        self.blocks = [EncoderBlock(self.num_heads, self.mlp_dim / self.width, True, self.dropout_rate,
                                    self.attention_dropout_rate, self.dtype, attention=self.attention,
                                    name=f"blocks_{i}") for i in range(self.depth)]
        self.norm = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)

    def __call__(self, tokens: jnp.ndarray, train: bool) -> jnp.ndarray:
        n = tokens.shape[1]
        if self.positions == "learned":
            if n > self.max_len:
                raise ValueError(f"sequence of {n} tokens is longer than the model's max_len={self.max_len} "
                                 f"learned positions (model.max_len)")
            pos = self.pos_embed[:n]
        else:
            pos = jnp.asarray(sinusoidal_positions(n, self.width))
        x = self.token_embed(tokens) + pos.astype(self.dtype)
        x = self.embed_dropout(self.embed_norm(x), deterministic=not train)
        mask = tokens != PAD_ID
        for block in self.blocks:
            x = block(x, train, mask=mask)
        return self.norm(x)

    def attend(self, x: jnp.ndarray) -> jnp.ndarray:
        """x [..., width] against the token embedding: logits [..., vocab_size] (the tied MLM decoder)."""
        return self.token_embed.attend(x)


class MLMHead(nn.Module):
    """Dense(d) -> GELU -> LayerNorm; the caller decodes through the tied embedding; adds the vocabulary bias."""

    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, decode) -> jnp.ndarray:
        x = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=trunc_normal_02, name="dense")(x)
        x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(nn.gelu(x, approximate=False))
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,))
        return decode(x).astype(jnp.float32) + bias


class Classifier(nn.Module):
    """[CLS] hidden state -> Dense(d) -> tanh -> dropout -> Dense(1): a logit per sequence."""

    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, cls: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = jnp.tanh(nn.Dense(cls.shape[-1], dtype=self.dtype, kernel_init=trunc_normal_02, name="pooler")(cls))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(1, dtype=self.dtype, kernel_init=trunc_normal_02, name="out")(x)[:, 0].astype(jnp.float32)


@register("bert_small")
class Bert(nn.Module):
    """BERT-small-like text model (defaults: 4 blocks, 8 heads, width 512, FFN 2048; thesis ch. 4.5.1).

    `vocab_size`: the tokenizer's; `max_len`: the learned position table's rows (sequences may be shorter);
    `positions`: learned | sinusoidal; `attention`: the spec of every block (jaxvision/layers/
    efficient_attention.py); `head`: mlm | classification.
    """

    vocab_size: int = 30522
    max_len: int = 512
    width: int = 512
    depth: int = 4
    num_heads: int = 8
    mlp_dim: int = 2048
    positions: str = "learned"
    attention: str = "vanilla"
    head: str = "mlm"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"model.head={self.head!r} is unknown; choose one of {HEADS}")
        if self.positions not in POSITIONS:
            raise ValueError(f"model.positions={self.positions!r} is unknown; choose one of {POSITIONS}")
        if self.width % self.num_heads:
            raise ValueError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
        super().__post_init__()

    def setup(self):
        self.encoder = BertEncoder(self.vocab_size, self.max_len, self.width, self.depth, self.num_heads,
                                   self.mlp_dim, self.positions, self.attention, self.dropout_rate,
                                   self.attention_dropout_rate, self.dtype)
        if self.head == "mlm":
            self.mlm_head = MLMHead(self.vocab_size, self.dtype)
        else:
            self.classifier = Classifier(self.dropout_rate, self.dtype)

    def __call__(self, tokens: jnp.ndarray, mlm_positions: jnp.ndarray | None = None, train: bool = False):
        """tokens int [B, N] -> MLM logits [B, P, vocab] at `mlm_positions` [B, P] ([B, N, vocab] without them)
        or the classification logit [B], float32."""
        hidden = self.encoder(tokens, train)
        if self.head == "classification":
            return self.classifier(hidden[:, 0], train)
        if mlm_positions is not None:
            hidden = jnp.take_along_axis(hidden, mlm_positions[..., None].astype(jnp.int32), axis=1)
        return self.mlm_head(hidden, self.encoder.attend)


@register("bert_tiny")
class BertTiny(Bert):
    """`Bert` with CPU-sized defaults for tests and the synthetic task: 2 blocks, 4 heads, width 128, FFN 512."""

    width: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 512
