"""DeepLabv3+ for joint semantic segmentation and metric depth (reports 002/003).

Pieces: `ContextDecoder` (ASPP or 1x1 conv on the deepest features + DeepLabv3+ decoder with the
stride-4 skip) and `TaskHeads` (1x1 conv per task, upsampling, output activation) are separate
modules, and `DeepLabV3Plus` builds its encoder and context decoders through `encode` /
`context_decoder`, so the branched and task-distillation variants (jaxvision/models/multitask.py)
reuse them as they are.

The encoder is any registered backbone with a dilated features mode ({4, 8, 16, 32} -> NHWC maps)
and the options `num_classes`, `output_stride`, `norm`, `dtype` (`supported_encoders()`): the
ResNet / ResNeXt / SE-ResNet, MobileNetV2, EfficientNet-B0..B3 and RegNet families. ViT is not one:
it has only stride-16 patch tokens and no stride-4 skip.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.aspp import ASPP
from jaxvision.layers.conv import ConvNormAct, check_norm
from jaxvision.layers.decoder import DeepLabV3PlusDecoder, resize_bilinear
from jaxvision.models.registry import create, list_models, model_options, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("semseg", "depth")
# The constructor options DeepLabv3+ passes to its encoder; a backbone taking them all has the dilated features mode.
ENCODER_OPTIONS = ("num_classes", "output_stride", "norm", "dtype")
LOG_DEPTH_RANGE = (-8.0, 8.0)  # raw log-depth is clipped here before exp: 3e-4 m .. 3e3 m
INITIAL_DEPTH_M = 10.0


def normalize_imagenet(images: jnp.ndarray) -> jnp.ndarray:
    """[0, 1] RGB -> ImageNet-standardised, in float32."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (images.astype(jnp.float32) - mean) / std


def aspp_rates_at(rates: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """Atrous rates given for output stride 16, scaled to `output_stride` (x2 at 8, /2 at 32)."""
    scaled = tuple(r * 16 / output_stride for r in rates)
    if any(s != int(s) or s < 1 for s in scaled):
        raise ValueError(f"model.aspp_rates {tuple(rates)} (given for output stride 16) do not scale to whole "
                         f"rates >= 1 at output_stride {output_stride}")
    return tuple(int(s) for s in scaled)


def check_tasks(tasks: Sequence[tuple[str, int]]) -> None:
    """Raises a ValueError naming `model.tasks` for unknown tasks or a depth task with != 1 channel."""
    for entry in tasks:
        if len(entry) != 2 or entry[0] not in TASKS:
            raise ValueError(f"model.tasks entry {entry!r} is invalid; expected (name, channels) with name in "
                             f"{', '.join(TASKS)}")
        if entry[0] == "depth" and entry[1] != 1:
            raise ValueError(f"model.tasks: 'depth' has 1 channel, got {entry[1]}")


def supported_encoders() -> list[str]:
    """Registered backbones a DeepLabv3+ encoder can be: those taking all of `ENCODER_OPTIONS`."""
    return [name for name in list_models() if set(ENCODER_OPTIONS) <= set(model_options(name))]


def check_encoder(name: str) -> None:
    """Raises a ValueError naming `model.encoder` and the reason unless `name` is in `supported_encoders()`."""
    if name not in list_models():
        reason = "is not a registered model"
    else:
        missing = [o for o in ENCODER_OPTIONS if o not in model_options(name)]
        if not missing:
            return
        reason = (f"has no option {', '.join(missing)} (encoders are the backbones with dilated stride-4/8/16/32 "
                  f"features)")
    raise ValueError(f"model.encoder '{name}' {reason}; choose one of {', '.join(supported_encoders())}")


class ContextDecoder(nn.Module):
    """ASPP (or a 1x1 ConvNormAct when `use_aspp=False`) on the deepest features, then the
    DeepLabv3+ decoder with the stride-4 skip; returns `decoder_channels` stride-4 features."""

    aspp_rates: Sequence[int] = (6, 12, 18)
    aspp_channels: int = 256
    aspp_dropout: float = 0.1
    use_aspp: bool = True
    skip_channels: int = 48
    decoder_channels: int = 256
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, deepest: jnp.ndarray, skip: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.use_aspp:
            context = ASPP(self.aspp_channels, tuple(self.aspp_rates), self.aspp_dropout, norm=self.norm,
                           dtype=self.dtype, name="aspp")(deepest, train)
        else:
            context = ConvNormAct(self.aspp_channels, 1, norm=self.norm, dtype=self.dtype, name="aspp")(deepest, train)
        return DeepLabV3PlusDecoder(self.decoder_channels, self.skip_channels, norm=self.norm, dtype=self.dtype,
                                    name="decoder")(context, skip, train)


def activate(raw: dict) -> dict:
    """Raw head outputs (`TaskHeads.raw`) -> the model outputs: 'semseg' logits as they are, 'depth'
    exp(clip(log-depth)) metres [B,H,W]."""
    return {task: jnp.exp(jnp.clip(r[..., 0], *LOG_DEPTH_RANGE)) if task == "depth" else r for task, r in raw.items()}


class TaskHeads(nn.Module):
    """One 1x1 conv (with bias) per task on stride-4 features, bilinear upsampling to `size`, then
    'semseg': logits [B,H,W,C]; 'depth': exp(clip(raw)) metres [B,H,W] (initially ~`initial_depth_m`).
    Float32 out. `features` is one array for all tasks, or a dict {task: array} (one branch per task)."""

    tasks: Sequence[tuple[str, int]] = (("semseg", 19), ("depth", 1))
    dtype: jnp.dtype = jnp.float32
    initial_depth_m: float = INITIAL_DEPTH_M

    @nn.compact
    def raw(self, features: jnp.ndarray | dict, size: tuple[int, int]) -> dict:
        """Upsampled float32 outputs before the activation: logits [B,H,W,C], log-depth [B,H,W,1]."""
        outputs = {}
        for task, channels in self.tasks:
            bias = np.log(self.initial_depth_m) if task == "depth" else 0.0
            x = features[task] if isinstance(features, dict) else features
            y = nn.Conv(channels, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                        bias_init=nn.initializers.constant(bias), name=f"head_{task}")(x)
            outputs[task] = resize_bilinear(y.astype(jnp.float32), size)
        return outputs

    def __call__(self, features: jnp.ndarray | dict, size: tuple[int, int]) -> dict:
        return activate(self.raw(features, size))


@register("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """Joint DeepLabv3+: shared dilated encoder, ASPP and decoder; a 1x1 head per task.

    Input: images [B,H,W,3] in [0,1] (normalised inside). Output: {'semseg': [B,H,W,C] logits,
    'depth': [B,H,W] metres}, float32 whatever the compute `dtype`. `encoder`: one of
    `supported_encoders()`. `skip_channels=0` drops the skip connection; `use_aspp=False` replaces
    ASPP by a 1x1 conv to `aspp_channels`.
    """

    encoder: str = "resnet34"
    output_stride: int = 16
    aspp_rates: Sequence[int] = (6, 12, 18)
    aspp_channels: int = 256
    aspp_dropout: float = 0.1
    use_aspp: bool = True
    skip_channels: int = 48
    decoder_channels: int = 256
    tasks: Sequence[tuple[str, int]] = (("semseg", 19), ("depth", 1))
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        check_tasks(self.tasks)
        check_norm(self.norm)
        aspp_rates_at(self.aspp_rates, self.output_stride)
        check_encoder(self.encoder)
        super().__post_init__()

    def encode(self, images: jnp.ndarray, train: bool) -> dict:
        """The encoder submodule ('encoder') applied to normalised `images`: {4, 8, 16, 32} -> features."""
        x = normalize_imagenet(images).astype(self.dtype)
        encoder = create(self.encoder, num_classes=None, output_stride=self.output_stride, norm=self.norm,
                         dtype=self.dtype, name="encoder")
        return encoder(x, train, features=True)

    def context_decoder(self, name: str) -> ContextDecoder:
        """A new ContextDecoder submodule `name` with this model's ASPP / decoder settings."""
        return ContextDecoder(aspp_rates=aspp_rates_at(self.aspp_rates, self.output_stride),
                              aspp_channels=self.aspp_channels, aspp_dropout=self.aspp_dropout, use_aspp=self.use_aspp,
                              skip_channels=self.skip_channels, decoder_channels=self.decoder_channels, norm=self.norm,
                              dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        feats = self.encode(images, train)
        y = self.context_decoder("context_decoder")(feats[32], feats[4], train)
        return TaskHeads(tuple(self.tasks), self.dtype, name="heads")(y, images.shape[1:3])
