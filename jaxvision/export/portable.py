"""Re-expresses the primitives an older StableHLO consumer cannot read, by re-evaluating a function's jaxpr.

JAX 0.10 lowers `top_k`, `erf`, `erfc` and `square` to CHLO ops, which it serialises as `composite` ops; TensorFlow 2.21's
XlaCallModule (StableHLO 1.13) cannot read those, so a SavedModel holding them fails when it runs. `portable(fn)`
traces `fn` to a jaxpr and evaluates it again with those primitives replaced by core-op equivalents:
- top_k: a stable descending sort of (value, index) pairs, sliced; the same values and indices, ties broken
  towards the lower index as lax.top_k does;
- erf: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7; float32 steps by 6e-8 near 1), its Maclaurin series
  near 0; erfc = 1 - erf (the same absolute error: exact GELU's tail);
- square: x * x (the same IEEE product).
jit bodies and custom_jvp / custom_vjp rules are inlined (the result is for inference, not differentiation).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

_AS_ERF = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_AS_ERF_P = 0.3275911
# erf(x) = 2 / sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
_SERIES = tuple(2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(7))


def sorted_top_k(operand: jax.Array, k: int, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """lax.top_k over `axis` from a stable sort: (values, int32 indices), best first."""
    axis = axis % operand.ndim
    index = lax.broadcasted_iota(jnp.int32, operand.shape, axis)
    negated, idx = lax.sort((-operand, index), dimension=axis, num_keys=1, is_stable=True)
    return -lax.slice_in_dim(negated, 0, k, axis=axis), lax.slice_in_dim(idx, 0, k, axis=axis)


def polynomial_erf(x: jax.Array) -> jax.Array:
    """erf from exp and polynomials: Abramowitz & Stegun 7.1.26, and below |x| = 0.5 (where 1 - p e^-x^2
    cancels) the Maclaurin series to x^13 (truncation < 2e-9)."""
    a = jnp.abs(x)
    t = 1.0 / (1.0 + _AS_ERF_P * a)
    poly = t * (_AS_ERF[0] + t * (_AS_ERF[1] + t * (_AS_ERF[2] + t * (_AS_ERF[3] + t * _AS_ERF[4]))))
    tail = jnp.sign(x) * (1.0 - poly * jnp.exp(-a * a))
    x2 = x * x
    series = x * (_SERIES[0] + x2 * (_SERIES[1] + x2 * (_SERIES[2] + x2 * (_SERIES[3] + x2 * (
        _SERIES[4] + x2 * (_SERIES[5] + x2 * _SERIES[6]))))))
    return jnp.where(a < 0.5, series, tail)


# primitive name -> function of (operands, **params) returning the list of outputs
SUBSTITUTES: dict[str, Callable] = {"top_k": lambda x, k, axis=-1, **_: list(sorted_top_k(x, k, axis)),
                                    "erf": lambda x, **_: [polynomial_erf(x)],
                                    "erfc": lambda x, **_: [1.0 - polynomial_erf(x)],
                                    "square": lambda x, **_: [x * x]}
_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _evaluate(jaxpr, consts, args) -> list:
    env = {}

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        body = next((eqn.params[k] for k in _BODY_PARAMS if k in eqn.params), None)
        if eqn.primitive.name in SUBSTITUTES:
            outs = SUBSTITUTES[eqn.primitive.name](*values, **eqn.params)
        elif body is not None:  # jit, custom_jvp / custom_vjp, remat: evaluate the body in place
            inner, inner_consts = (body.jaxpr, body.consts) if hasattr(body, "consts") else (body, [])
            outs = _evaluate(inner, inner_consts, values[len(values) - len(inner.invars):])
        else:
            outs = eqn.primitive.bind(*values, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def portable(fn: Callable) -> Callable:
    """`fn` (arrays -> array or tuple of arrays) with the SUBSTITUTES' primitives computed from core ops."""
    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _evaluate(closed.jaxpr, closed.consts, args)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)
    return wrapped
