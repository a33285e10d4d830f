"""Parameters and multiply-accumulates (MACs) per stage of a model, analytic and from XLA's cost analysis.

    profile = profile_model("resnet18", (1, 224, 224, 3))
    print(format_profile(profile))

Stages are the model's top-level submodules (`stem`, `layer1_0`, ..., `head`), grouped into rows by the
stride of their output relative to the input ('stride 4', ...); submodules whose output is not one NHWC map
(ViT blocks, a classifier head, a dict of outputs) get a row per name prefix ('blocks', 'head').

Three counts per row:
  * MACs: the analytic count of the conv and dense layers (output elements x kernel taps x input channels /
    groups; in x out per token for dense) plus the two matmuls of dot-product self-attention. Taps that fall
    on zero padding count, the convention of published figures (ResNet-18: 1.81 G at 224 x 224).
  * no-pad: the same without the taps on zero padding, which is what XLA counts for a convolution.
  * XLA: flops / 2 of `jax.jit(apply).lower(...).compile().cost_analysis()`, per row by compiling each
    submodule alone on its recorded input. It includes elementwise ops (norms, activations, pooling: one
    flop each), so XLA / no-pad is at or slightly above 1 where convs and matmuls dominate. The 'other' row
    holds the whole model's count minus the rows': ops between the submodules, and elementwise ops that
    fusion duplicates into several consumers across submodule boundaries (~0.6% of ResNet-50).
Everything runs on abstract shapes (no weights are initialised, nothing is executed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.linear import canonicalize_padding

from jaxvision import models
from jaxvision.config import ConfigError
from jaxvision.fileio import write_atomic
from jaxvision.layers.attention import MultiHeadSelfAttention, dot_product_attention


# Layers with multiply-adds that the analytic count does not cover (none of jaxvision's models uses them).
_UNCOUNTED = (nn.ConvTranspose, nn.ConvLocal, nn.DenseGeneral, nn.Einsum, nn.MultiHeadDotProductAttention)


@dataclasses.dataclass
class LayerCount:
    """One conv / dense / attention call: its module path, shapes and MACs (with and without padding taps)."""

    path: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    macs_no_pad: int


@dataclasses.dataclass
class StageRow:
    """A row of the table: top-level submodules `modules` sharing an output stride (or a name prefix)."""

    stage: str
    modules: list[str]
    output: str
    params: int
    macs: int
    macs_no_pad: int
    macs_xla: float | None


@dataclasses.dataclass
class Profile:
    """Rows per stage plus whole-model totals; `macs_xla` of the total is one compile of the whole model."""

    model: str
    input_shape: tuple[int, ...]
    rows: list[StageRow]
    params: int
    macs: int
    macs_no_pad: int
    macs_xla: float | None
    layers: list[LayerCount]
    notes: list[str]
    seconds: float


@dataclasses.dataclass
class _Call:
    """A call of a top-level submodule: an unbound copy of it and its (abstract) arguments."""

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict
    output: Any


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'1x224x224x3' -> (1, 224, 224, 3); ConfigError unless it is 4 positive integers joined by 'x'."""
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input '{text}' is malformed; expected BxHxWxC, 4 positive integers such as 1x224x224x3")
    return tuple(int(p) for p in parts)


def _abstract(tree):
    """Arrays (tracers included) -> ShapeDtypeStruct; other leaves (train flags, sizes) unchanged."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if isinstance(a, jax.Array) else a, tree)


def _valid_taps(size: int, out: int, kernel: int, stride: int, dilation: int, pad_lo: int) -> int:
    """Kernel taps, summed over the `out` output positions of one axis, that land inside the input."""
    index = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - pad_lo
    return int(np.count_nonzero((index >= 0) & (index < size)))


def _conv_count(module: nn.Conv, x, y) -> tuple[int, int]:
    """(MACs, MACs without the taps on zero padding) of an nn.Conv call from `x` to `y` (channels last)."""
    kernel = tuple(module.kernel_size)
    per_output = math.prod(kernel) * x.shape[-1] // module.feature_group_count
    macs = math.prod(y.shape) * per_output
    rank = len(kernel)
    spatial_in, spatial_out = x.shape[-rank - 1:-1], y.shape[-rank - 1:-1]
    strides = _per_axis(module.strides, rank)
    dilations = _per_axis(module.kernel_dilation, rank)
    padding = module.padding
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):  # CIRCULAR / CAUSAL pad with data or are 1-D: count all
            return macs, macs
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        padding = jax.lax.padtype_to_pads(spatial_in, dilated, strides, padding.upper())
    else:
        padding = canonicalize_padding(padding, rank)
    if module.input_dilation not in (None, 1) or len(padding) != rank:
        return macs, macs
    taps = math.prod(_valid_taps(n, o, k, s, d, lo)
                     for n, o, k, s, d, (lo, _) in zip(spatial_in, spatial_out, kernel, strides, dilations, padding))
    no_pad = math.prod(y.shape[:-rank - 1]) * taps * y.shape[-1] * (x.shape[-1] // module.feature_group_count)
    return macs, no_pad


def _per_axis(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _layer_count(path: str, module: nn.Module, args: tuple, output) -> LayerCount | None:
    """The analytic count of one call of a conv, dense or dot-product self-attention module; None otherwise."""
    x = args[0]
    if isinstance(module, nn.Conv):
        macs, no_pad = _conv_count(module, x, output)
        kind = "conv"
    elif isinstance(module, nn.Dense):
        macs = no_pad = math.prod(output.shape) * x.shape[-1]
        kind = "dense"
    elif isinstance(module, MultiHeadSelfAttention) and module.attention_fn is dot_product_attention:
        b, n, d = x.shape  # q k^T and weights v: B * heads * N * N * head_dim each
        macs = no_pad = 2 * b * n * n * d
        kind = "attention"
    else:
        return None
    return LayerCount(path, kind, tuple(x.shape), tuple(output.shape), int(macs), int(no_pad))


def _trace(model: nn.Module, variables, x) -> tuple[list[LayerCount], list[_Call], list[str]]:
    """Runs `model` abstractly once, recording the conv/dense/attention counts and the top-level submodule calls."""
    layers, calls, notes = [], [], []

    def interceptor(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        module, path = context.module, context.module.path
        if context.method_name != "__call__" or not path:
            return output
        count = _layer_count("/".join(path), module, args, output)
        if count is not None:
            layers.append(count)
        elif isinstance(module, MultiHeadSelfAttention):
            notes.append(f"{path[0]}: the attention matmuls of {module.attention_fn.__name__} are in XLA's count only")
        elif isinstance(module, _UNCOUNTED):
            notes.append(f"{path[0]}: {type(module).__name__} layers are in XLA's count only")
        if len(path) == 1:
            calls.append(_Call(path[0], module.clone(parent=None), _abstract(args), _abstract(kwargs),
                               _abstract(output)))
        return output

    def run(variables, x):
        with nn.intercept_methods(interceptor):
            return model.apply(variables, x, train=False)

    jax.eval_shape(run, variables, x)
    return layers, calls, sorted(set(notes))


def _xla_macs(fn, *args) -> float | None:
    """flops / 2 of the compiled `fn` on abstract `args`; None when the backend reports no flops."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per HLO module
        cost = cost[0] if cost else None
    if cost is None:
        return None
    return float(cost.get("flops", 0.0)) / 2  # a program without arithmetic (e.g. eval-mode dropout) has no entry


def _call_xla_macs(call: _Call, variables, cache: dict) -> float | None:
    """XLA MACs of one top-level submodule call, compiled alone with its own variables on its recorded input.

    Identical submodules on identical inputs (e.g. the 12 blocks of a ViT) are compiled once.
    """
    leaves, treedef = jax.tree.flatten((call.args, call.kwargs))
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]
    own = {col: tree[call.name] for col, tree in variables.items() if call.name in tree}
    key = (repr(call.module.clone(name=None)), repr(leaves), str(treedef), repr(jax.tree.map(np.shape, own)))
    if key not in cache:
        def run(own, *xs):
            filled = list(leaves)
            for i, value in zip(arrays, xs):
                filled[i] = value
            args, kwargs = jax.tree.unflatten(treedef, filled)
            return call.module.apply(own, *args, **kwargs)

        cache[key] = _xla_macs(run, own, *[leaves[i] for i in arrays])
    return cache[key]


def _shape_text(value) -> str:
    """1x56x56x64 for an array; 'key:shape, ...' (cut at 48 characters) for a dict or sequence of arrays."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return "x".join(map(str, value.shape))
    items = value.items() if isinstance(value, dict) else enumerate(jax.tree.leaves(value))
    text = ", ".join(f"{k}:{_shape_text(v)}" for k, v in items)
    return text if len(text) <= 48 else text[:45] + "..."


def _stage_key(call: _Call, height: int) -> str:
    """'stride S' for an NHWC output (S = input height / output height), else the name without its index."""
    out = call.output
    if isinstance(out, jax.ShapeDtypeStruct) and len(out.shape) == 4:
        up = out.shape[1] > height  # an upsampled map: 'stride 1/2'
        return f"stride 1/{round(out.shape[1] / height)}" if up else f"stride {round(height / out.shape[1])}"
    return re.sub(r"_?\d+$", "", call.name)


def _module_list(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 2 else f"{names[0]}..{names[-1]} ({len(names)})"


def profile_model(model_or_name: nn.Module | str, input_shape: Sequence[int], *, xla: bool = True,
                  **options) -> Profile:
    """Parameters and MACs per stage of a model: a Module, or a registered name built with `options`
    (`models.create`: ValueError for an unknown name, TypeError for an unknown option).

    `input_shape` is NHWC, e.g. (1, 224, 224, 3). `xla=False` skips the XLA compiles (the analytic counts
    need only an abstract trace).
    """
    start = time.perf_counter()
    if isinstance(model_or_name, str):
        model, label = models.create(model_or_name, **options), model_or_name
    elif options:
        raise TypeError(f"options {', '.join(options)} need a model name, not a Module")
    else:
        model, label = model_or_name, type(model_or_name).__name__
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ConfigError(f"input shape {input_shape} is not 4 positive sizes (batch, height, width, channels)")
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    layers, calls, notes = _trace(model, variables, x)
    params = variables.get("params", {})

    # Submodules without parameters or counted layers (e.g. a Dropout) are left to the 'other' row.
    counted_names = {c.path.split("/")[0] for c in layers}
    calls = [c for c in calls if c.name in params or c.name in counted_names]
    names = list(dict.fromkeys(c.name for c in calls))  # first-call order
    last_call = {c.name: c for c in calls}
    cache: dict = {}
    xla_per_name: dict[str, float | None] = {}  # summed over the calls of a submodule called more than once
    for call in calls if xla else ():
        macs, before = _call_xla_macs(call, variables, cache), xla_per_name.get(call.name, 0.0)
        xla_per_name[call.name] = None if macs is None or before is None else before + macs
    total_xla = _xla_macs(lambda v, x: model.apply(v, x, train=False), variables, x) if xla else None

    groups: list[tuple[str, list[str]]] = []
    for name in names:
        key = _stage_key(last_call[name], input_shape[1])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(name)
        else:
            groups.append((key, [name]))
    rows = []
    for key, members in groups:
        counted = [c for c in layers if c.path.split("/")[0] in members]
        per_member_xla = [xla_per_name.get(m) for m in members]
        rows.append(StageRow(key, members, _shape_text(last_call[members[-1]].output),
                             sum(models.count_params(params.get(m, {})) for m in members),
                             sum(c.macs for c in counted), sum(c.macs_no_pad for c in counted),
                             None if total_xla is None or None in per_member_xla else sum(per_member_xla)))
    root_params = models.count_params({k: v for k, v in params.items() if k not in names})
    staged_xla = None if any(r.macs_xla is None for r in rows) or total_xla is None \
        else total_xla - sum(r.macs_xla for r in rows)
    if root_params or staged_xla:
        # Parameters of the model itself (e.g. ViT's cls_token / pos_embed), and the whole-model compile minus
        # the submodules' compiles: the ops between submodules (pooling, position embeddings) plus elementwise
        # ops that XLA's fusion duplicates into several consumers across submodule boundaries.
        rows.append(StageRow("other", ["(model)"], "", root_params, 0, 0, staged_xla))
    return Profile(label, input_shape, rows, models.count_params(params), sum(c.macs for c in layers),
                   sum(c.macs_no_pad for c in layers), total_xla, layers, notes, time.perf_counter() - start)


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.2f}"


def format_profile(profile: Profile) -> str:
    """An aligned text table: a row per stage, the totals, and what the columns count."""
    header = ("stage", "modules", "output", "params", "MMACs", "no-pad", "XLA", "XLA/no-pad")

    def ratio(xla, no_pad):
        return "-" if xla is None or not no_pad else f"{xla / no_pad:.3f}"

    lines = [(r.stage, _module_list(r.modules), r.output, f"{r.params:,}", _millions(r.macs),
              _millions(r.macs_no_pad), _millions(r.macs_xla), ratio(r.macs_xla, r.macs_no_pad))
             for r in profile.rows]
    total = ("total", "", "", f"{profile.params:,}", _millions(profile.macs), _millions(profile.macs_no_pad),
             _millions(profile.macs_xla), ratio(profile.macs_xla, profile.macs_no_pad))
    widths = [max(len(row[i]) for row in (header, *lines, total)) for i in range(len(header))]

    def fmt(row):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(fmt(header))
    text = [f"{profile.model}  input {'x'.join(map(str, profile.input_shape))}  "
            f"({profile.params:,} parameters, {profile.macs / 1e9:.4f} GMACs)", fmt(header), rule,
            *map(fmt, lines), rule, fmt(total), "",
            "MMACs: conv + dense + self-attention multiply-adds (millions), taps on zero padding included; "
            "no-pad: without them;",
            "XLA: compiled cost_analysis flops / 2 (elementwise ops included); 'other': the model's own parameters "
            "and the whole",
            "model's XLA count minus the stages' (pooling between stages, elementwise ops that fusion repeats across "
            "stage boundaries).",
            *profile.notes]
    return "\n".join(text)


def write_json(profile: Profile, path: str) -> None:
    """Writes the profile (rows, totals and per-layer counts) as JSON, atomically."""
    write_atomic(path, json.dumps(dataclasses.asdict(profile), indent=2))
