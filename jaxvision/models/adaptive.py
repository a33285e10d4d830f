"""DeepLabv3+ with report 003's adaptive depth (Problem 4): depth from learnable per-image bins.

The encoder, ASPP + decoder and the semantic head are `DeepLabV3Plus`'s (same options, same parameter
names); depth comes from an `AdaptiveDepthHead` ('depth_head') instead of a 1x1 conv: latents extracted
from `depth_latents` features become the bins (transformer blocks, one depth value each), and each
pixel's depth is the softmax-weighted sum of the bin values, the weights from the similarity of a
3x3 conv of the stride-4 decoder features with the bins. `depth_latents` is the report's comparison:

* 'encoder': the lowest (stride-32 / dilated) encoder features, the report's best;
* 'decoder': the stride-4 decoder features ("predictions");
* 'aspp': an ASPP of its own ('latent_aspp', 256 channels) on the lowest encoder features.

The `bin_*` fields are the head's options (number of bins = latents, width, heads, layers, MLP
expansion, 'linear' report bins or 'adabins'); `attention` is the bins' self-attention spec ("vanilla",
"dct-0.25", ... of jaxvision/layers/efficient_attention.py).
Output: {'semseg': logits [B,H,W,C], 'depth': metres [B,H,W]}.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.adaptive_depth import AdaptiveDepthHead
from jaxvision.layers.aspp import ASPP
from jaxvision.layers.efficient_attention import parse_attention_spec
from jaxvision.models.deeplab import DeepLabV3Plus, TaskHeads, aspp_rates_at
from jaxvision.models.registry import register

LATENT_SOURCES = ("encoder", "decoder", "aspp")
ASPP_LATENT_CHANNELS = 256


@register("deeplabv3plus_adaptive")
class DeepLabV3PlusAdaptive(DeepLabV3Plus):
    """Joint DeepLabv3+ whose depth head is report 003's adaptive-bins head (see the module docstring)."""

    depth_latents: str = "encoder"
    bin_count: int = 256
    bin_dim: int = 256
    bin_heads: int = 4
    bin_layers: int = 3
    bin_expansion: float = 4.0
    bin_mode: str = "linear"
    attention: str = "vanilla"

    def __post_init__(self):
        if self.depth_latents not in LATENT_SOURCES:
            raise ValueError(f"depth_latents '{self.depth_latents}' is unknown; choose one of {', '.join(LATENT_SOURCES)}")
        if dict(self.tasks).get("depth") != 1:
            raise ValueError(f"deeplabv3plus_adaptive needs a ('depth', 1) task, got tasks {self.tasks}")
        parse_attention_spec(self.attention)
        super().__post_init__()

    def adaptive_depth(self, feats: dict, decoded: jnp.ndarray, size: tuple[int, int], train: bool) -> jnp.ndarray:
        """Depth [B,H,W] from the bins of the `depth_latents` features ('latent_aspp' for 'aspp', 'depth_head');
        `decoded` are the stride-4 decoder features (the pixel queries, and the 'decoder' latents)."""
        if self.depth_latents == "encoder":
            latents = feats[32]
        elif self.depth_latents == "decoder":
            latents = decoded
        else:
            latents = ASPP(ASPP_LATENT_CHANNELS, aspp_rates_at(self.aspp_rates, self.output_stride), self.aspp_dropout,
                           norm=self.norm, dtype=self.dtype, name="latent_aspp")(feats[32], train)
        head = AdaptiveDepthHead(num_bins=self.bin_count, dim=self.bin_dim, num_heads=self.bin_heads,
                                 num_layers=self.bin_layers, expansion=self.bin_expansion, bins=self.bin_mode,
                                 attention=self.attention, dtype=self.dtype, name="depth_head")
        return head(latents, decoded, size, train)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        feats = self.encode(images, train)
        decoded = self.context_decoder("context_decoder")(feats[32], feats[4], train)
        other_tasks = tuple((t, c) for t, c in self.tasks if t != "depth")
        outputs = TaskHeads(other_tasks, self.dtype, name="heads")(decoded, images.shape[1:3]) if other_tasks else {}
        outputs["depth"] = self.adaptive_depth(feats, decoded, images.shape[1:3], train)
        return outputs
