"""Where each jaxvision variable lives in a torchvision / timm state dict.

A naming function maps a module path of a jaxvision backbone (e.g. ('layer1_0', 'conv1', 'norm')) to
the PyTorch module name holding the same weights ('layer1.0.bn1'); `torch_key` adds the leaf
(kernel/scale -> weight, mean -> running_mean, ...). The models name their modules after torchvision
or timm on purpose (see each model's docstring), so these maps stay short.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable

from jaxvision.models.efficientnet import STAGES as EFFICIENTNET_STAGES
from jaxvision.models.efficientnet import EfficientNet
from jaxvision.models.mobilenet import MobileNetV2
from jaxvision.models.regnet import RegNet
from jaxvision.models.resnet import ResNet
from jaxvision.models.vit import VisionTransformer

SOURCES = ("torchvision", "timm")
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


@dataclasses.dataclass(frozen=True)
class Context:
    """What a naming function may need besides the path: the model and all its module paths."""
    model: object
    modules: frozenset

    def has(self, *path: str) -> bool:
        return tuple(path) in self.modules


def _seq(prefix: str, part: str) -> str:
    """torchvision's Conv2dNormActivation / Sequential(conv, bn): 'conv' -> prefix.0, 'norm' -> prefix.1."""
    return f"{prefix}.{0 if part == 'conv' else 1}"


def _index(name: str, pattern: str) -> tuple[int, ...]:
    return tuple(int(g) for g in re.fullmatch(pattern, name).groups())


def _resnet(path: tuple, ctx: Context) -> str:
    """torchvision ResNet / ResNeXt and timm ResNet / SE-ResNet (the same names)."""
    if path[0] == "stem":
        return {"conv": "conv1", "norm": "bn1"}[path[1]]
    if path[0] == "head":
        return "fc"
    layer, block = _index(path[0], r"layer(\d+)_(\d+)")
    sub, part = path[1], path[2]
    if sub == "downsample":
        tail = _seq("downsample", part)
    elif sub == "se":
        tail = f"se.{part}"
    else:
        tail = sub if part == "conv" else f"bn{sub[-1]}"
    return f"layer{layer}.{block}.{tail}"


def _mobilenet_v2_torchvision(path: tuple, ctx: Context) -> str:
    num_blocks = sum(1 for m in ctx.modules if len(m) == 1 and m[0].startswith("block"))
    top = {"stem": "features.0", "last_conv": f"features.{num_blocks + 1}"}
    if path[0] in top:
        return _seq(top[path[0]], path[1])
    if path[0] == "head":
        return "classifier.1"
    (i,) = _index(path[0], r"block(\d+)")
    order = (["expand"] if ctx.has(path[0], "expand") else []) + ["depthwise", "project"]
    k = order.index(path[1])
    if path[1] == "project":  # the projection's conv and BN sit directly in the block's Sequential
        return f"features.{i}.conv.{k if path[2] == 'conv' else k + 1}"
    return _seq(f"features.{i}.conv.{k}", path[2])


def _efficientnet_stage(path0: str, ctx: Context) -> tuple[int, int]:
    """(stage, index in stage) of EfficientNet module 'block{n}' (n from 1)."""
    (n,) = _index(path0, r"block(\d+)")
    depth_multiplier = ctx.model.depth_multiplier
    index = n - 1
    for stage, (*_, layers) in enumerate(EFFICIENTNET_STAGES):
        depth = int(math.ceil(layers * depth_multiplier))
        if index < depth:
            return stage, index
        index -= depth
    raise KeyError(path0)


def _efficientnet_torchvision(path: tuple, ctx: Context) -> str:
    top = {"stem": "features.0", "last_conv": f"features.{len(EFFICIENTNET_STAGES) + 1}"}
    if path[0] in top:
        return _seq(top[path[0]], path[1])
    if path[0] == "head":
        return "classifier.1"
    stage, j = _efficientnet_stage(path[0], ctx)
    order = (["expand"] if ctx.has(path[0], "expand") else []) + ["depthwise", "se", "project"]
    prefix = f"features.{stage + 1}.{j}.block.{order.index(path[1])}"
    return f"{prefix}.{path[2]}" if path[1] == "se" else _seq(prefix, path[2])


def _efficientnet_timm(path: tuple, ctx: Context) -> str:
    top = {("stem", "conv"): "conv_stem", ("stem", "norm"): "bn1", ("last_conv", "conv"): "conv_head",
           ("last_conv", "norm"): "bn2", ("head",): "classifier"}
    if tuple(path) in top:
        return top[tuple(path)]
    stage, j = _efficientnet_stage(path[0], ctx)
    if path[1] == "se":
        return f"blocks.{stage}.{j}.se.{ {'fc1': 'conv_reduce', 'fc2': 'conv_expand'}[path[2]] }"
    if ctx.has(path[0], "expand"):  # timm InvertedResidual
        names = {"expand": ("conv_pw", "bn1"), "depthwise": ("conv_dw", "bn2"), "project": ("conv_pwl", "bn3")}
    else:  # timm DepthwiseSeparableConv
        names = {"depthwise": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
    conv, norm = names[path[1]]
    return f"blocks.{stage}.{j}.{conv if path[2] == 'conv' else norm}"


def _vit_timm(path: tuple, ctx: Context) -> str:
    if path[0] == "patch_embed":
        return "patch_embed.proj"
    if path[0].startswith("blocks_"):
        return ".".join(("blocks", path[0][len("blocks_"):]) + tuple(path[1:]))
    return ".".join(path)


def _vit_torchvision(path: tuple, ctx: Context) -> str:
    top = {"patch_embed": "conv_proj", "norm": "encoder.ln", "head": "heads.head"}
    if path[0] in top:
        return top[path[0]]
    (i,) = _index(path[0], r"blocks_(\d+)")
    inner = {("norm1",): "ln_1", ("norm2",): "ln_2", ("attn", "qkv"): "self_attention.in_proj",
             ("attn", "proj"): "self_attention.out_proj", ("mlp", "fc1"): "mlp.0", ("mlp", "fc2"): "mlp.3"}
    return f"encoder.layers.encoder_layer_{i}.{inner[tuple(path[1:])]}"


def _regnet_torchvision(path: tuple, ctx: Context) -> str:
    if path[0] == "stem":
        return _seq("stem", path[1])
    if path[0] == "head":
        return "fc"
    i, j = _index(path[0], r"block(\d+)_(\d+)")
    prefix = f"trunk_output.block{i}.block{i}-{j}"
    if path[1] == "proj":
        return _seq(f"{prefix}.proj", path[2])
    if path[1] == "se":
        return f"{prefix}.f.se.{path[2]}"
    return _seq(f"{prefix}.f.{path[1]}", path[2])


def _regnet_timm(path: tuple, ctx: Context) -> str:
    norm = {"conv": "conv", "norm": "bn"}
    if path[0] == "stem":
        return f"stem.{norm[path[1]]}"
    if path[0] == "head":
        return "head.fc"
    i, j = _index(path[0], r"block(\d+)_(\d+)")
    prefix = f"s{i}.b{j + 1}"
    if path[1] == "se":
        return f"{prefix}.se.{path[2]}"
    sub = {"a": "conv1", "b": "conv2", "c": "conv3", "proj": "downsample"}[path[1]]
    return f"{prefix}.{sub}.{norm[path[2]]}"


# (model class, source) -> naming function.
NAMINGS: dict[tuple[type, str], Callable[[tuple, Context], str]] = {
    (ResNet, "torchvision"): _resnet, (ResNet, "timm"): _resnet,
    (MobileNetV2, "torchvision"): _mobilenet_v2_torchvision,
    (EfficientNet, "torchvision"): _efficientnet_torchvision, (EfficientNet, "timm"): _efficientnet_timm,
    (VisionTransformer, "timm"): _vit_timm, (VisionTransformer, "torchvision"): _vit_torchvision,
    (RegNet, "torchvision"): _regnet_torchvision, (RegNet, "timm"): _regnet_timm,
}


def naming_for(model, source: str) -> Callable[[tuple, Context], str]:
    """The naming function of `model`'s family for `source`; ValueError naming both when there is none."""
    if source not in SOURCES:
        raise ValueError(f"weight source '{source}' is unknown; choose one of {', '.join(SOURCES)}")
    for (cls, src), naming in NAMINGS.items():
        if isinstance(model, cls) and src == source:
            return naming
    supported = sorted(f"{cls.__name__} from {src}" for cls, src in NAMINGS)
    raise ValueError(f"no {source} weight names for {type(model).__name__}; supported: {', '.join(supported)}")


def torch_key(naming: Callable, ctx: Context, module_path: tuple, leaf: str) -> str:
    """Full state-dict key of one jaxvision variable (module path + leaf name)."""
    if not module_path:  # top-level parameters such as ViT's cls_token / pos_embed
        return {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding"}.get(leaf, leaf) \
            if naming is _vit_torchvision else leaf
    module = naming(module_path, ctx)
    if module.endswith("in_proj"):  # torch.nn.MultiheadAttention's fused q/k/v: in_proj_weight / in_proj_bias
        return f"{module}_{_LEAVES[leaf]}"
    return f"{module}.{_LEAVES[leaf]}"
