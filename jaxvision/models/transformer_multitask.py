"""Report 003's multi-task transformer (Problem 5, Fig. 10a, Code Snippets 10 and 11).

A symmetric branched model in which both tasks use attention after the shared (dilated) encoder:

* depth, as Problem 4: its own DeepLabv3+ decoder on the lowest encoder features with the stride-4 skip
  ('depth_decoder', no ASPP, as the report's `decoder_depth`) gives the pixel queries; the bins come from
  `depth_latents` ('aspp': an ASPP of its own, 'latent_aspp', the report's choice here; 'encoder';
  'decoder') through the adaptive-bins head ('depth_head', options `bin_*` as `deeplabv3plus_adaptive`);
* semseg, `seg_attention`:
  - 'self' (Snippet 10, the report's final model): ASPP ('semseg_aspp') -> `seg_latents` latents
    (bilinear resize to E x E) -> `seg_layers` pre-norm self-attention blocks ('semseg_transformer')
    -> the E x E map -> the DeepLabv3+ decoder with the skip ('semseg_decoder') -> 1x1 head;
  - 'cross' (Snippet 11): ASPP -> decoder -> learnable class tokens cross-attending to the per-pixel
    decoder features ('semseg_cross_attention'); logits = <class token, pixel feature>.

Options are `deeplabv3plus_adaptive`'s (encoder, ASPP rates, channels, `bin_*`, `attention`: the spec of every
self-attention block, e.g. "dct-0.25"; the class-token cross-attention stays softmax attention) plus `seg_*`. Outputs:
{'semseg': logits [B,H,W,C] float32, 'depth': metres [B,H,W] float32}; tasks must be semseg and depth.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.aspp import ASPP
from jaxvision.layers.cross_attention import ClassTokenCrossAttention
from jaxvision.layers.decoder import DeepLabV3PlusDecoder, resize_bilinear
from jaxvision.layers.latent_transformer import LatentTransformer
from jaxvision.models.adaptive import DeepLabV3PlusAdaptive
from jaxvision.models.deeplab import TaskHeads, aspp_rates_at
from jaxvision.models.registry import register

SEG_ATTENTION = ("self", "cross")


@register("deeplabv3plus_transformer")
class DeepLabV3PlusTransformer(DeepLabV3PlusAdaptive):
    """Branched model with attention in both tasks (see the module docstring)."""

    depth_latents: str = "aspp"
    seg_attention: str = "self"
    seg_latents: int = 256
    seg_dim: int = 256
    seg_heads: int = 4
    seg_layers: int = 3
    seg_expansion: float = 4.0
    seg_dropout: float = 0.0

    def __post_init__(self):
        if self.seg_attention not in SEG_ATTENTION:
            raise ValueError(f"seg_attention '{self.seg_attention}' is unknown; choose one of {', '.join(SEG_ATTENTION)}")
        if sorted(t for t, _ in self.tasks) != ["depth", "semseg"]:
            raise ValueError(f"deeplabv3plus_transformer predicts exactly 'semseg' and 'depth', got tasks {self.tasks}")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        size = images.shape[1:3]
        feats = self.encode(images, train)
        decoder = lambda name: DeepLabV3PlusDecoder(self.decoder_channels, self.skip_channels,  # noqa: E731
                                                    norm=self.norm, dtype=self.dtype, name=name)
        depth_features = decoder("depth_decoder")(feats[32], feats[4], train)
        depth = self.adaptive_depth(feats, depth_features, size, train)

        context = ASPP(self.aspp_channels, aspp_rates_at(self.aspp_rates, self.output_stride), self.aspp_dropout,
                       norm=self.norm, dtype=self.dtype, name="semseg_aspp")(feats[32], train)
        classes = dict(self.tasks)["semseg"]
        if self.seg_attention == "self":
            grid = LatentTransformer(self.seg_latents, self.seg_dim, self.seg_heads, self.seg_layers,
                                     self.seg_expansion, self.seg_dropout, dtype=self.dtype, attention=self.attention,
                                     name="semseg_transformer")(context, train, as_map=True)
            seg_features = decoder("semseg_decoder")(grid, feats[4], train)
            semseg = TaskHeads((("semseg", classes),), self.dtype, name="heads")(seg_features, size)["semseg"]
        else:
            seg_features = decoder("semseg_decoder")(context, feats[4], train)
            logits = ClassTokenCrossAttention(classes, self.seg_dim, self.seg_heads, self.seg_layers,
                                              self.seg_expansion, self.seg_dropout, dtype=self.dtype,
                                              name="semseg_cross_attention")(seg_features, train)
            semseg = resize_bilinear(logits, size)
        return {"semseg": semseg, "depth": depth}
