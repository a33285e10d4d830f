"""JAX function -> ONNX graph, by walking its jaxpr.

`to_onnx(fn, specs, ...)` traces `fn` to a jaxpr and emits one or a few standard ONNX nodes per
primitive. Everything that depends only on constants (weights, iota, resize matrices, DCT bases,
BatchNorm's scale and shift) is evaluated here and stored as an initializer. Convolutions followed by a
per-channel multiply / add of constants (inference BatchNorm, biases) are folded into the Conv's weights.

The graph keeps JAX's layout: an NHWC convolution is Transpose -> Conv (NCHW) -> Transpose, and ONNX
Runtime / TensorRT cancel the transposes between consecutive layers. A batch dimension given as a string
(e.g. "batch") is symbolic: the graph then runs any batch size.

Why not jax2onnx: it patches Flax/JAX functions while tracing, which broke on linen's positional
`nn.max_pool(x, window, ...)` (jax2onnx 0.17.1), and it pins orbax-checkpoint < 0.11.37, which conflicts
with this project's checkpoints. A jaxpr walk sees the exact operations XLA would run, names the layer
of any operation it cannot convert, and needs only the `onnx` package.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from jax.extend.core import Literal
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 21)
BATCH_SYMBOL = "b"


class ExportError(ValueError):
    """An operation or a setting that cannot be exported; the message names the primitive and the layer."""


_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
               np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int8): TensorProto.INT8,
               np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.bool_): TensorProto.BOOL,
               np.dtype(jnp.bfloat16): TensorProto.BFLOAT16}


@dataclasses.dataclass
class Value:
    """A jaxpr value during conversion: an ONNX tensor `name`, or a folded constant `const`.

    `shape` is the logical (JAX) shape; the tensor or constant itself may have size-1 dimensions where
    `shape` does not (a broadcast not yet materialised), which every elementwise ONNX op broadcasts."""

    shape: tuple
    dtype: np.dtype
    name: str | None = None
    const: np.ndarray | None = None
    partial: bool = False         # a tensor with size-1 dimensions where `shape` has more (see above)
    conv: "_Conv | None" = None   # the Conv node this tensor is the (transposed) output of, for folding
    uses: int = 0                 # how often the jaxpr uses the variable holding this value

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclasses.dataclass
class _Conv:
    node: Any
    weight: np.ndarray            # OIHW float
    bias: np.ndarray              # [O]
    channel_axis: int             # the channel axis of the logical (JAX-layout) output


def _is_symbolic(dim) -> bool:
    return not isinstance(dim, (int, np.integer))


def _linear_in_batch(dim) -> tuple[int, int]:
    """(k, c) with dim == k * batch + c, for the symbolic batch dimension's expressions."""
    at = lambda b: int(eval(str(dim), {"__builtins__": {}}, {BATCH_SYMBOL: b}))  # noqa: S307 - jax's own repr
    k = at(2) - at(1)
    return k, at(1) - k


def _where(eqn) -> str | None:
    """file:line of the user code that made `eqn` (for error messages), if known."""
    from jax._src import source_info_util  # noqa: PLC0415 - no public API gives an equation's user frame
    frame = source_info_util.user_frame(eqn.source_info.traceback)
    return f"{frame.file_name}:{frame.start_line}" if frame else None


class _Converter:
    """Holds the ONNX graph under construction; one `convert_*` method per primitive family."""

    def __init__(self, opset: int, float16: bool):
        self.opset = opset
        self.float16 = float16
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self._const_names: dict[int, str] = {}
        self._counter = 0
        self._convs: list[_Conv] = []
        self.batch_source: str | None = None   # name of a graph input whose dim 0 is the symbolic batch
        self.layer = ""                        # Flax module path of the equation being converted
        self.where = "?"                       # its source line
        self._scopes: list[tuple[str, str]] = []  # (layer, where) of the jit / custom_jvp calls we are inside

    # ------------------------------------------------------------------ graph building helpers
    def fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        name = f"{self.layer}/{op}_{self._counter}" if self.layer else f"{op}_{self._counter}"
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs

    def one(self, op: str, inputs: Sequence[str], **attrs) -> str:
        return self.node(op, inputs, **attrs)[0]

    def onnx_dtype(self, dtype) -> int:
        dtype = np.dtype(dtype)
        if self.float16 and dtype == np.float32:
            return TensorProto.FLOAT16
        if dtype not in _ONNX_TYPES:
            raise ExportError(f"dtype {dtype} has no ONNX equivalent (layer {self.layer})")
        return _ONNX_TYPES[dtype]

    def const_name(self, array: np.ndarray, hint: str = "const") -> str:
        key = id(array)
        if key not in self._const_names:
            name = self.fresh(hint)
            self.initializers[name] = array
            self._const_names[key] = name
        return self._const_names[key]

    def ints(self, values: Sequence[int]) -> str:
        return self.const_name(np.asarray(list(values), np.int64), "ints")

    def shape_tensor(self, shape: tuple) -> str:
        """An int64 1-D tensor holding `shape`; symbolic (batch) dims are computed from the batch input."""
        if not any(_is_symbolic(d) for d in shape):
            return self.ints(shape)
        if self.batch_source is None:
            raise ExportError(f"symbolic shape {shape} without a symbolic batch input")
        batch = self.one("Slice", [self.one("Shape", [self.batch_source]), self.ints([0]), self.ints([1])])
        parts = []
        for d in shape:
            if not _is_symbolic(d):
                parts.append(self.ints([d]))
                continue
            k, c = _linear_in_batch(d)
            t = batch if k == 1 else self.one("Mul", [batch, self.ints([k])])
            parts.append(t if c == 0 else self.one("Add", [t, self.ints([c])]))
        return self.one("Concat", parts, axis=0)

    def reshape_target(self, shape: tuple) -> str:
        """Reshape's shape input: constants, with -1 for a single symbolic dim, else computed."""
        symbolic = [i for i, d in enumerate(shape) if _is_symbolic(d)]
        if len(symbolic) <= 1:
            return self.ints([-1 if i in symbolic else int(d) for i, d in enumerate(shape)])
        return self.shape_tensor(shape)

    def tensor(self, v: Value) -> str:
        """The ONNX name of `v`, as stored (possibly with broadcast dimensions of size 1)."""
        if v.is_const:
            return self.const_name(v.const)
        return v.name

    def full(self, v: Value) -> str:
        """The ONNX name of `v` with its full logical shape (materialises a pending broadcast)."""
        if v.is_const:
            if not any(_is_symbolic(d) for d in v.shape):
                if v.const.shape != tuple(v.shape):
                    v.const = np.ascontiguousarray(np.broadcast_to(v.const, v.shape))
                return self.const_name(v.const)
            return self.one("Expand", [self.const_name(v.const), self.shape_tensor(v.shape)])
        if v.partial:
            return self.one("Expand", [v.name, self.shape_tensor(v.shape)])
        return v.name

    def axes_arg(self, op: str, axes: Sequence[int]) -> tuple[list[str], dict]:
        """ReduceMax/Min/Mean/Prod take `axes` as an attribute before opset 18, as an input from 18."""
        if op == "ReduceSum" or self.opset >= 18:
            return [self.ints(axes)], {}
        return [], {"axes": list(axes)}

    def finalize_convs(self) -> None:
        for conv in self._convs:
            conv.node.input[1] = self.const_name(conv.weight.astype(np.float32), "conv_w")
            conv.node.input.append(self.const_name(conv.bias.astype(np.float32), "conv_b"))

    # ------------------------------------------------------------------ jaxpr walking
    def run(self, jaxpr, consts: list[Value], inputs: list[Value]) -> list[Value]:
        """Converts the equations of `jaxpr` (a core.Jaxpr), binding `consts` to its constvars and `inputs`
        to its invars; returns the values of its outvars."""
        uses: dict = {}
        for eqn in jaxpr.eqns:
            for var in eqn.invars:
                if not isinstance(var, Literal):
                    uses[var] = uses.get(var, 0) + 1
        for var in jaxpr.outvars:
            if not isinstance(var, Literal):
                uses[var] = uses.get(var, 0) + 2   # a jaxpr output is never folded away
        env: dict = {}

        def read(var) -> Value:
            if isinstance(var, Literal):
                return Value(tuple(np.shape(var.val)), np.dtype(var.aval.dtype),
                             const=np.asarray(var.val, var.aval.dtype))
            return env[var]

        for var, value in zip(list(jaxpr.constvars) + list(jaxpr.invars), consts + inputs):
            env[var] = value
        for eqn in jaxpr.eqns:
            args = [read(v) for v in eqn.invars]
            for var, value in zip(eqn.invars, args):
                if not isinstance(var, Literal):
                    value.uses = uses.get(var, 0)
            outs = self.equation(eqn, args)
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, args: list[Value]) -> list[Value]:
        prim = eqn.primitive.name
        outer_layer, outer_where = self._scopes[-1] if self._scopes else ("", "?")
        inner = str(eqn.source_info.name_stack)
        self.layer = "/".join(p for p in (outer_layer, inner) if p) or "<top level>"
        self.where = _where(eqn) or outer_where
        sub = next((eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params), None)
        if sub is not None:  # jit, custom_jvp / custom_vjp, remat: convert the body in place
            jaxpr, consts = (sub.jaxpr, [_const_value(c) for c in sub.consts]) if hasattr(sub, "consts") else (sub, [])
            self._scopes.append((self.layer if self.layer != "<top level>" else "", self.where))
            try:
                return self.run(jaxpr, consts, args[len(args) - len(jaxpr.invars):])
            finally:
                self._scopes.pop()
        out_avals = [v.aval for v in eqn.outvars]
        symbolic_out = any(_is_symbolic(d) for a in out_avals for d in a.shape)
        if all(a.is_const for a in args) and prim not in _NEVER_FOLD and not symbolic_out:
            return self.fold(eqn, args, out_avals)
        handler = _HANDLERS.get(prim)
        if handler is None:
            raise ExportError(f"cannot export primitive '{prim}' in layer '{self.layer}' ({self.where}): no ONNX "
                              "conversion is implemented for it")
        try:
            outs = handler(self, eqn, args, out_avals)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - name the layer of any conversion failure
            raise ExportError(f"cannot export '{prim}' in layer '{self.layer}' ({self.where}): {e}") from e
        return outs

    def fold(self, eqn, args: list[Value], out_avals) -> list[Value]:
        """Evaluates an equation on constants (numpy for elementwise ops keeps pending broadcasts small)."""
        prim = eqn.primitive.name
        if prim in _NUMPY_ELEMENTWISE and all(not _is_symbolic(d) for a in args for d in a.shape):
            params = {k: eqn.params[k] for k in ("y", "new_dtype") if k in eqn.params}
            result = _NUMPY_ELEMENTWISE[prim](*[a.const for a in args], **params)
            aval = out_avals[0]
            return [Value(tuple(aval.shape), np.dtype(aval.dtype), const=np.asarray(result, aval.dtype))]
        if any(_is_symbolic(d) for a in args for d in a.shape):
            raise ExportError(f"cannot fold '{prim}' on a constant of symbolic shape in layer '{self.layer}'")
        full = [np.broadcast_to(a.const, a.shape) for a in args]
        results = eqn.primitive.bind(*[jnp.asarray(x) for x in full], **eqn.params)
        results = results if eqn.primitive.multiple_results else [results]
        return [Value(tuple(a.shape), np.dtype(a.dtype), const=np.asarray(r)) for a, r in zip(out_avals, results)]


# Handled even on constants: broadcast_in_dim keeps the constant small (size-1 axes) instead of folding
# it to its full broadcast size; iota (no inputs) is built with numpy.
_NEVER_FOLD = {"broadcast_in_dim", "iota"}

_NUMPY_ELEMENTWISE: dict[str, Callable] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b if np.issubdtype(np.result_type(a, b), np.floating) else np.trunc(a / b),
    "max": lambda a, b: np.maximum(a, b), "min": lambda a, b: np.minimum(a, b), "neg": lambda a: -a,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda a: 1.0 / np.sqrt(a), "tanh": np.tanh,
    "logistic": lambda a: 1.0 / (1.0 + np.exp(-a)), "abs": np.abs, "sin": np.sin, "cos": np.cos,
    "square": lambda a: a * a, "integer_pow": lambda a, y: a ** y, "pow": lambda a, b: a ** b,
    "convert_element_type": lambda a, new_dtype: a.astype(new_dtype),
    "eq": np.equal, "ne": np.not_equal, "gt": np.greater, "ge": np.greater_equal, "lt": np.less,
    "le": np.less_equal, "and": np.logical_and, "or": np.logical_or, "not": np.logical_not,
    "select_n": lambda p, *cases: np.choose(p.astype(np.int32), np.broadcast_arrays(*cases)) if len(cases) > 2
    else np.where(p, cases[1], cases[0]),
}

# ---------------------------------------------------------------------------------------- handlers
_HANDLERS: dict[str, Callable] = {}


def _handles(*names: str):
    def register(fn):
        for name in names:
            _HANDLERS[name] = fn
        return fn
    return register


def _const_value(c) -> Value:
    return Value(tuple(np.shape(c)), np.dtype(c.dtype), const=np.asarray(c))


def _tensor_out(aval, name: str, partial: bool = False) -> Value:
    return Value(tuple(aval.shape), np.dtype(aval.dtype), name=name, partial=partial)


def _is_partial(v: Value) -> bool:
    return v.const.shape != tuple(v.shape) if v.is_const else v.partial


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
           "eq": "Equal", "gt": "Greater", "ge": "GreaterOrEqual", "lt": "Less", "le": "LessOrEqual",
           "and": "And", "or": "Or", "rem": "Mod"}


def _per_channel(const: np.ndarray, rank: int, axis: int) -> np.ndarray | None:
    """`const` as a [C] vector when it varies only along `axis` of a rank-`rank` tensor, else None."""
    c = np.asarray(const)
    c = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if any(s != 1 for i, s in enumerate(c.shape) if i != axis):
        return None
    return c.reshape(-1)


def _fold_into_conv(cv: _Converter, op: str, x: Value, c: Value, aval) -> Value | None:
    """x (a Conv's output used once) op per-channel constant c -> the same Conv with new weights / bias."""
    conv = x.conv
    if conv is None or x.uses != 1 or np.dtype(c.dtype).kind != "f":
        return None
    vec = _per_channel(c.const, len(x.shape), conv.channel_axis)
    if vec is None:
        return None
    out_channels = conv.weight.shape[0]
    vec = np.broadcast_to(vec.astype(np.float64), (out_channels,))
    if op == "mul" or op == "div":
        scale = vec if op == "mul" else 1.0 / vec
        conv.weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
        conv.bias = conv.bias * scale
    else:
        conv.bias = conv.bias + (vec if op == "add" else -vec)
    out = _tensor_out(aval, x.name)
    out.conv = conv
    return out


@_handles(*_BINARY)
def _binary(cv: _Converter, eqn, args, avals):
    prim = eqn.primitive.name
    a, b = args
    if prim in ("mul", "add") and a.is_const and not b.is_const:
        a, b = b, a
    if prim in ("add", "sub", "mul", "div") and b.is_const and not a.is_const:
        folded = _fold_into_conv(cv, prim, a, b, avals[0])
        if folded is not None:
            return [folded]
    attrs = {"fmod": 1} if prim == "rem" and np.dtype(a.dtype).kind == "f" else {}
    out = cv.one(_BINARY[prim], [cv.tensor(a), cv.tensor(b)], **attrs)
    return [_tensor_out(avals[0], out, partial=_is_partial(a) and _is_partial(b))]


@_handles("ne")
def _not_equal(cv, eqn, args, avals):
    a, b = args
    return [_tensor_out(avals[0], cv.one("Not", [cv.one("Equal", [cv.tensor(a), cv.tensor(b)])]),
                        partial=_is_partial(a) and _is_partial(b))]


_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh", "logistic": "Sigmoid",
          "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "erf": "Erf", "sin": "Sin", "cos": "Cos",
          "not": "Not", "round": "Round", "copy": "Identity", "copy_p": "Identity", "reduce_precision": "Identity",
          "optimization_barrier": "Identity", "stop_gradient": "Identity"}


@_handles(*_UNARY)
def _unary(cv, eqn, args, avals):
    x = args[0]
    if eqn.primitive.name == "round" and eqn.params.get("rounding_method", 0) not in (1, "TO_NEAREST_EVEN"):
        # away from zero: sign(x) * floor(|x| + 0.5)
        half = np.asarray(0.5, x.dtype)
        out = cv.one("Mul", [cv.one("Sign", [x.name]),
                             cv.one("Floor", [cv.one("Add", [cv.one("Abs", [x.name]), cv.const_name(half)])])])
    else:
        out = cv.one(_UNARY[eqn.primitive.name], [cv.tensor(x)])
    return [_tensor_out(avals[0], out, partial=_is_partial(x))]


@_handles("rsqrt")
def _rsqrt(cv, eqn, args, avals):
    return [_tensor_out(avals[0], cv.one("Reciprocal", [cv.one("Sqrt", [cv.tensor(args[0])])]), _is_partial(args[0]))]


@_handles("square")
def _square(cv, eqn, args, avals):
    t = cv.tensor(args[0])
    return [_tensor_out(avals[0], cv.one("Mul", [t, t]), _is_partial(args[0]))]


@_handles("log1p", "expm1", "erfc")
def _one_plus_minus(cv, eqn, args, avals):
    x = args[0]
    one = cv.const_name(np.asarray(1, x.dtype))
    if eqn.primitive.name == "log1p":
        out = cv.one("Log", [cv.one("Add", [cv.tensor(x), one])])
    elif eqn.primitive.name == "expm1":
        out = cv.one("Sub", [cv.one("Exp", [cv.tensor(x)]), one])
    else:
        out = cv.one("Sub", [one, cv.one("Erf", [cv.tensor(x)])])
    return [_tensor_out(avals[0], out, _is_partial(x))]


@_handles("integer_pow")
def _integer_pow(cv, eqn, args, avals):
    x, y = args[0], eqn.params["y"]
    t = cv.tensor(x)
    if y == 2:
        out = cv.one("Mul", [t, t])
    elif y == -1:
        out = cv.one("Reciprocal", [t])
    elif y == 1:
        out = cv.one("Identity", [t])
    else:
        out = cv.one("Pow", [t, cv.const_name(np.asarray(float(y), x.dtype))])
    return [_tensor_out(avals[0], out, _is_partial(x))]


@_handles("convert_element_type")
def _convert(cv, eqn, args, avals):
    x = args[0]
    out = cv.one("Cast", [cv.tensor(x)], to=cv.onnx_dtype(eqn.params["new_dtype"]))
    return [_tensor_out(avals[0], out, _is_partial(x))]


@_handles("clamp")
def _clamp(cv, eqn, args, avals):
    lo, x, hi = args
    out = cv.one("Min", [cv.one("Max", [cv.tensor(x), cv.tensor(lo)]), cv.tensor(hi)])
    return [_tensor_out(avals[0], out, _is_partial(x))]


@_handles("select_n")
def _select_n(cv, eqn, args, avals):
    pred, *cases = args
    p = cv.tensor(pred)
    if len(cases) == 2:
        if np.dtype(pred.dtype) != np.bool_:
            p = cv.one("Cast", [p], to=TensorProto.BOOL)
        out = cv.one("Where", [p, cv.tensor(cases[1]), cv.tensor(cases[0])])
    else:
        out = cv.tensor(cases[0])
        for i, case in enumerate(cases[1:], 1):
            eq = cv.one("Equal", [p, cv.const_name(np.asarray(i, pred.dtype))])
            out = cv.one("Where", [eq, cv.tensor(case), out])
    return [_tensor_out(avals[0], out, partial=all(_is_partial(a) for a in args))]


@_handles("broadcast_in_dim")
def _broadcast_in_dim(cv, eqn, args, avals):
    """Inserts the new axes as size 1 (Unsqueeze); consumers broadcast, `full` materialises when needed."""
    x, shape, dims = args[0], tuple(eqn.params["shape"]), eqn.params["broadcast_dimensions"]
    new_axes = [i for i in range(len(shape)) if i not in dims]
    if x.is_const:
        stored = x.const.reshape(tuple(x.const.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))))
        return [Value(shape, np.dtype(avals[0].dtype), const=stored)]
    out = cv.one("Unsqueeze", [x.name, cv.ints(new_axes)]) if new_axes else x.name
    partial = _is_partial(x) or any(x.shape[k] != shape[d] for k, d in enumerate(dims)) or bool(new_axes)
    return [_tensor_out(avals[0], out, partial=partial)]


@_handles("reshape")
def _reshape(cv, eqn, args, avals):
    x = args[0]
    target = cv.reshape_target(tuple(eqn.params["new_sizes"]))
    return [_tensor_out(avals[0], cv.one("Reshape", [cv.full(x), target]))]


@_handles("squeeze")
def _squeeze(cv, eqn, args, avals):
    return [_tensor_out(avals[0], cv.one("Squeeze", [cv.full(args[0]), cv.ints(eqn.params["dimensions"])]))]


@_handles("expand_dims")
def _expand_dims(cv, eqn, args, avals):
    return [_tensor_out(avals[0], cv.one("Unsqueeze", [cv.full(args[0]), cv.ints(eqn.params["dimensions"])]))]


@_handles("transpose")
def _transpose(cv, eqn, args, avals):
    return [_tensor_out(avals[0], cv.one("Transpose", [cv.full(args[0])], perm=list(eqn.params["permutation"])))]


@_handles("concatenate")
def _concatenate(cv, eqn, args, avals):
    return [_tensor_out(avals[0], cv.one("Concat", [cv.full(a) for a in args], axis=eqn.params["dimension"]))]


@_handles("split")
def _split(cv, eqn, args, avals):
    sizes, axis = eqn.params["sizes"], eqn.params["axis"]
    outs = cv.node("Split", [cv.full(args[0]), cv.ints(sizes)], n_out=len(sizes), axis=axis)
    return [_tensor_out(a, o) for a, o in zip(avals, outs)]


@_handles("slice")
def _slice(cv, eqn, args, avals):
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    axes = [i for i in range(len(starts)) if (starts[i], strides[i]) != (0, 1) or limits[i] != args[0].shape[i]]
    if not axes:
        return [_tensor_out(avals[0], cv.full(args[0]))]
    out = cv.one("Slice", [cv.full(args[0]), cv.ints([starts[i] for i in axes]), cv.ints([limits[i] for i in axes]),
                           cv.ints(axes), cv.ints([strides[i] for i in axes])])
    return [_tensor_out(avals[0], out)]


@_handles("rev")
def _rev(cv, eqn, args, avals):
    axes = list(eqn.params["dimensions"])
    big = np.iinfo(np.int64).max
    out = cv.one("Slice", [cv.full(args[0]), cv.ints([-1] * len(axes)), cv.ints([-big] * len(axes)), cv.ints(axes),
                           cv.ints([-1] * len(axes))])
    return [_tensor_out(avals[0], out)]


@_handles("dynamic_slice")
def _dynamic_slice(cv, eqn, args, avals):
    x, *starts = args
    if not all(s.is_const for s in starts):
        raise ExportError(f"dynamic_slice with data-dependent start in layer '{cv.layer}'")
    sizes = eqn.params["slice_sizes"]
    begin = [int(np.clip(int(s.const), 0, d - n)) for s, d, n in zip(starts, x.shape, sizes)]
    out = cv.one("Slice", [cv.full(x), cv.ints(begin), cv.ints([b + n for b, n in zip(begin, sizes)]),
                           cv.ints(range(len(begin)))])
    return [_tensor_out(avals[0], out)]


@_handles("pad")
def _pad(cv, eqn, args, avals):
    x, value = args
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config):
        raise ExportError(f"pad with interior padding in layer '{cv.layer}'")
    t = cv.full(x)
    lo = [max(0, l) for l, _, _ in config]
    hi = [max(0, h) for _, h, _ in config]
    if any(l < 0 or h < 0 for l, h, _ in config):  # negative padding crops
        axes = [i for i, (l, h, _) in enumerate(config) if l < 0 or h < 0]
        starts = [max(0, -config[i][0]) for i in axes]
        ends = [x.shape[i] - max(0, -config[i][1]) for i in axes]
        t = cv.one("Slice", [t, cv.ints(starts), cv.ints(ends), cv.ints(axes)])
    if any(lo) or any(hi):
        fill = cv.const_name(np.asarray(value.const).reshape(())) if value.is_const else cv.tensor(value)
        t = cv.one("Pad", [t, cv.ints(lo + hi), fill], mode="constant")
    return [_tensor_out(avals[0], t)]


_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}


@_handles(*_REDUCE)
def _reduce(cv, eqn, args, avals):
    op = _REDUCE[eqn.primitive.name]
    extra, attrs = cv.axes_arg(op, eqn.params["axes"])
    return [_tensor_out(avals[0], cv.one(op, [cv.full(args[0]), *extra], keepdims=0, **attrs))]


@_handles("reduce_and", "reduce_or")
def _reduce_bool(cv, eqn, args, avals):
    op = "ReduceMin" if eqn.primitive.name == "reduce_and" else "ReduceMax"
    extra, attrs = cv.axes_arg(op, eqn.params["axes"])
    as_int = cv.one("Cast", [cv.full(args[0])], to=TensorProto.INT32)
    out = cv.one(op, [as_int, *extra], keepdims=0, **attrs)
    return [_tensor_out(avals[0], cv.one("Cast", [out], to=TensorProto.BOOL))]


@_handles("argmax", "argmin")
def _argmax(cv, eqn, args, avals):
    (axis,) = eqn.params["axes"]
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    out = cv.one(op, [cv.full(args[0])], axis=axis, keepdims=0, select_last_index=0)
    return [_tensor_out(avals[0], cv.one("Cast", [out], to=cv.onnx_dtype(eqn.params["index_dtype"])))]


@_handles("cumsum")
def _cumsum(cv, eqn, args, avals):
    axis = cv.const_name(np.asarray(eqn.params["axis"], np.int64))
    out = cv.one("CumSum", [cv.full(args[0]), axis], reverse=int(eqn.params.get("reverse", False)))
    return [_tensor_out(avals[0], out)]


@_handles("top_k")
def _top_k(cv, eqn, args, avals):
    values, indices = cv.node("TopK", [cv.full(args[0]), cv.ints([eqn.params["k"]])], n_out=2, axis=-1,
                              largest=1, sorted=1)
    return [_tensor_out(avals[0], values),
            _tensor_out(avals[1], cv.one("Cast", [indices], to=cv.onnx_dtype(avals[1].dtype)))]


@_handles("dot_general")
def _dot_general(cv, eqn, args, avals):
    """Transpose both sides to [batch, free, contract] / [batch, contract, free], MatMul, reshape back."""
    a, b = args
    (ca, cb), (ba, bb) = eqn.params["dimension_numbers"]
    fa = [i for i in range(len(a.shape)) if i not in ca and i not in ba]
    fb = [i for i in range(len(b.shape)) if i not in cb and i not in bb]
    out_shape = avals[0].shape

    def arrange(v, batch, free, contract, contract_first):
        order = list(batch) + (list(contract) + list(free) if contract_first else list(free) + list(contract))
        if v.is_const:
            arr = np.transpose(np.broadcast_to(v.const, v.shape), order)
            lead = [arr.shape[i] for i in range(len(batch))]
            fsize = math.prod(v.shape[i] for i in free)
            csize = math.prod(v.shape[i] for i in contract)
            tail = [csize, fsize] if contract_first else [fsize, csize]
            if len(free) != 1 or len(contract) != 1:
                arr = arr.reshape(lead + tail)
            return cv.const_name(np.ascontiguousarray(arr))
        t = cv.full(v)
        if order != list(range(len(order))):
            t = cv.one("Transpose", [t], perm=order)
        if len(free) != 1 or len(contract) != 1:
            fsize = math.prod(v.shape[i] for i in free)
            csize = math.prod(v.shape[i] for i in contract)
            tail = [csize, fsize] if contract_first else [fsize, csize]
            t = cv.one("Reshape", [t, cv.reshape_target(tuple(v.shape[i] for i in batch) + tuple(tail))])
        return t

    # A plain x @ W (one contracting axis last on x, W a 2-D constant): MatMul on the N-D input directly.
    if not ba and list(ca) == [len(a.shape) - 1] and b.is_const and len(b.shape) == 2 and not _is_partial(a):
        w = b.const if list(cb) == [0] else b.const.T
        out = cv.one("MatMul", [a.name, cv.const_name(np.ascontiguousarray(w))])
        return [_tensor_out(avals[0], out)]
    ta = arrange(a, ba, fa, ca, contract_first=False)
    tb = arrange(b, bb, fb, cb, contract_first=True)
    out = cv.one("MatMul", [ta, tb])
    if len(fa) != 1 or len(fb) != 1:
        out = cv.one("Reshape", [out, cv.reshape_target(tuple(out_shape))])
    return [_tensor_out(avals[0], out)]


@_handles("conv_general_dilated")
def _conv(cv, eqn, args, avals):
    x, w = args
    p = eqn.params
    if p["batch_group_count"] != 1:
        raise ExportError(f"batch-grouped convolution in layer '{cv.layer}' is not supported")
    dn = p["dimension_numbers"]
    lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    t = cv.full(x)
    if list(lhs) != list(range(len(lhs))):
        t = cv.one("Transpose", [t], perm=list(lhs))
    if any(d != 1 for d in p["lhs_dilation"]):  # a transposed conv: zeros between the inputs, then a plain conv
        if any(lo < 0 or hi < 0 for lo, hi in p["padding"]):
            raise ExportError(f"transposed convolution with negative padding in layer '{cv.layer}' is not supported")
        channels = x.shape[lhs[1]]
        ones = np.ones((channels, 1) + (1,) * len(p["lhs_dilation"]), x.dtype)
        t = cv.one("ConvTranspose", [t, cv.const_name(ones)], strides=list(p["lhs_dilation"]), group=channels)
    if not w.is_const:
        raise ExportError(f"convolution with non-constant weights in layer '{cv.layer}'")
    weight = np.transpose(np.broadcast_to(w.const, w.shape), rhs).astype(np.float64)
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    y = cv.fresh("conv")
    node = helper.make_node("Conv", [t, ""], [y], name=f"{cv.layer}/Conv_{cv._counter}",
                            strides=list(p["window_strides"]), pads=pads, dilations=list(p["rhs_dilation"]),
                            group=p["feature_group_count"], kernel_shape=list(weight.shape[2:]))
    cv.nodes.append(node)
    conv = _Conv(node, weight, np.zeros(weight.shape[0]), channel_axis=out[1])
    cv._convs.append(conv)
    back = [int(i) for i in np.argsort(out)]
    if back != list(range(len(back))):
        y = cv.one("Transpose", [y], perm=back)
    v = _tensor_out(avals[0], y)
    v.conv = conv
    return [v]


def _pool_layout(cv, x: Value, window) -> tuple[list[int], list[int]]:
    spatial = [i for i, w in enumerate(window) if w != 1]
    rest = [i for i in range(len(window)) if i not in spatial]
    if len(rest) != 2:
        raise ExportError(f"pooling over {len(spatial)} of {len(window)} axes in layer '{cv.layer}'")
    return rest + spatial, spatial


@_handles("reduce_window_max", "reduce_window_sum")
def _reduce_window(cv, eqn, args, avals):
    x = args[0]
    p = eqn.params
    window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
    if any(d != 1 for d in p["base_dilation"]):
        raise ExportError(f"pooling with base dilation in layer '{cv.layer}'")
    perm, spatial = _pool_layout(cv, x, [w if w != 1 or s != 1 else 1 for w, s in zip(window, strides)])
    t = cv.one("Transpose", [cv.full(x)], perm=perm) if perm != list(range(len(perm))) else cv.full(x)
    attrs = dict(kernel_shape=[window[i] for i in spatial], strides=[strides[i] for i in spatial],
                 pads=[padding[i][0] for i in spatial] + [padding[i][1] for i in spatial])
    if eqn.primitive.name == "reduce_window_max":
        y = cv.one("MaxPool", [t], dilations=[p["window_dilation"][i] for i in spatial], **attrs)
    else:
        y = cv.one("AveragePool", [t], count_include_pad=1, **attrs)
        y = cv.one("Mul", [y, cv.const_name(np.asarray(math.prod(window), x.dtype))])
    back = [int(i) for i in np.argsort(perm)]
    if back != list(range(len(back))):
        y = cv.one("Transpose", [y], perm=back)
    return [_tensor_out(avals[0], y)]


@_handles("iota")
def _iota(cv, eqn, args, avals):
    p = eqn.params
    shape = tuple(p["shape"])
    if any(_is_symbolic(d) for d in shape):
        raise ExportError(f"iota of symbolic shape in layer '{cv.layer}'")
    arr = np.broadcast_to(np.arange(shape[p["dimension"]], dtype=p["dtype"]).reshape(
        [-1 if i == p["dimension"] else 1 for i in range(len(shape))]), shape)
    return [Value(shape, np.dtype(p["dtype"]), const=np.ascontiguousarray(arr))]


@_handles("gather")
def _gather(cv, eqn, args, avals):
    """A gather that picks along one axis (`x[i]`, `x[:, ids]`, embedding lookups) as ONNX Gather."""
    x, idx = args
    dn = eqn.params["dimension_numbers"]
    sizes = tuple(eqn.params["slice_sizes"])
    (axis,) = dn.start_index_map if len(dn.start_index_map) == 1 else (None,)
    if (axis is None or tuple(dn.collapsed_slice_dims) != (axis,) or getattr(dn, "operand_batching_dims", ())
            or sizes[axis] != 1 or any(sizes[i] != x.shape[i] for i in range(len(sizes)) if i != axis)
            or idx.shape[-1] != 1):
        raise ExportError(f"gather other than indexing along one axis in layer '{cv.layer}' ({cv.where})")
    ids = cv.one("Squeeze", [cv.full(idx), cv.ints([len(idx.shape) - 1])])
    out = cv.one("Gather", [cv.full(x), ids], axis=axis)
    n_batch = len(idx.shape) - 1
    onnx_order = [("x", i) for i in range(axis)] + [("i", j) for j in range(n_batch)] + \
                 [("x", i) for i in range(axis + 1, len(x.shape))]
    operand_dims = iter(i for i in range(len(x.shape)) if i != axis)
    index_dims = iter(range(n_batch))
    jax_order = [("x", next(operand_dims)) if p in dn.offset_dims else ("i", next(index_dims))
                 for p in range(len(avals[0].shape))]
    perm = [onnx_order.index(label) for label in jax_order]
    if perm != list(range(len(perm))):
        out = cv.one("Transpose", [out], perm=perm)
    return [_tensor_out(avals[0], out)]


# ---------------------------------------------------------------------------------------- entry point
def _value_info(name: str, shape: tuple, elem_type: int):
    dims = ["batch" if _is_symbolic(d) else int(d) for d in shape]
    return helper.make_tensor_value_info(name, elem_type, dims)


def to_onnx(fn: Callable, specs: Sequence[jax.ShapeDtypeStruct], input_names: Sequence[str],
            output_names: Sequence[str], opset: int = DEFAULT_OPSET, float16: bool = False,
            dynamic_batch: bool = False, graph_name: str = "jaxvision", doc: str = "") -> onnx.ModelProto:
    """ONNX model of `fn(*inputs) -> output or tuple of outputs`, traced at `specs`.

    `dynamic_batch` makes dim 0 of every input symbolic ('batch'). `float16` stores float weights and
    computes in float16, with float32 inputs and outputs (Cast at both ends)."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported (choose {SUPPORTED_OPSETS.start}-"
                          f"{SUPPORTED_OPSETS.stop - 1})")
    if dynamic_batch:
        (batch,) = jax.export.symbolic_shape(BATCH_SYMBOL)
        specs = [jax.ShapeDtypeStruct((batch, *s.shape[1:]), s.dtype) for s in specs]
    closed = jax.make_jaxpr(fn)(*specs)
    cv = _Converter(opset, float16)
    inputs, graph_inputs = [], []
    for name, spec in zip(input_names, specs):
        dtype = np.dtype(spec.dtype)
        onnx_type = _ONNX_TYPES[dtype]
        graph_inputs.append(_value_info(name, spec.shape, onnx_type))
        tensor = name
        if float16 and dtype == np.float32:
            tensor = cv.one("Cast", [name], to=TensorProto.FLOAT16)
        inputs.append(Value(tuple(spec.shape), dtype, name=tensor))
        if dynamic_batch and cv.batch_source is None:
            cv.batch_source = name
    outs = cv.run(closed.jaxpr, [_const_value(c) for c in closed.consts], inputs)
    if len(outs) != len(output_names):
        raise ExportError(f"the function returns {len(outs)} outputs but {len(output_names)} names were given")
    cv.layer = "outputs"
    graph_outputs = []
    for name, v in zip(output_names, outs):
        t = cv.full(v)
        if float16 and np.dtype(v.dtype) == np.float32:
            t = cv.one("Cast", [t], to=TensorProto.FLOAT)
        cv.nodes.append(helper.make_node("Identity", [t], [name], name=f"outputs/{name}"))
        graph_outputs.append(_value_info(name, v.shape, _ONNX_TYPES[np.dtype(v.dtype)]))
    cv.finalize_convs()
    initializers = []
    for name, array in cv.initializers.items():
        array = np.asarray(array)
        if float16 and array.dtype == np.float32:
            array = array.astype(np.float16)
        if array.dtype == jnp.bfloat16:
            array = array.astype(np.float32)
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    used = {i for n in cv.nodes for i in n.input}
    initializers = [t for t in initializers if t.name in used]
    graph = helper.make_graph(cv.nodes, graph_name, graph_inputs, graph_outputs, initializers, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="jaxvision", producer_version=_version())
    model.ir_version = _IR_VERSION[opset]
    return model


# The oldest IR version each opset needs: older runtimes (TensorRT 8.5 on JetPack 5) reject newer IRs.
_IR_VERSION = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("jaxvision")
    except PackageNotFoundError:
        return "0"


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """`onnx.checker` with full (strict) shape inference; returns the model with inferred shapes."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
