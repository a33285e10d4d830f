"""DepthwiseConv (shifted multiply-adds on CPU) against XLA's grouped convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct
from jaxvision.layers.depthwise import DepthwiseConv, depthwise_conv_shifted


@pytest.mark.parametrize("kernel,stride,dilation,size", [(3, 1, 1, 9), (3, 2, 1, 9), (3, 2, 1, 10), (5, 2, 1, 11),
                                                         (3, 1, 2, 9), (5, 1, 4, 13), (1, 1, 1, 4)])
def test_shifted_equals_grouped_conv(kernel, stride, dilation, size):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + dilation)
    x = jnp.asarray(rng.standard_normal((2, size, size + 3, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 1, 6)), jnp.float32)
    p = dilation * (kernel - 1) // 2
    padding = ((p, p), (p, p))

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)

    def shifted(x, w):
        return depthwise_conv_shifted(x, w, (stride, stride), padding, (dilation, dilation))

    np.testing.assert_allclose(shifted(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    for got, want in zip(jax.grad(loss(shifted), (0, 1))(x, w), jax.grad(loss(reference), (0, 1))(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_module_has_nn_conv_parameters_and_output():
    """Same parameter tree and init as nn.Conv with feature_group_count = channels, and the same output."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 4)), jnp.float32)
    kw = dict(features=4, kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)), feature_group_count=4)
    v_ours = DepthwiseConv(**kw).init(jax.random.key(0), x)
    v_flax = nn.Conv(**kw).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_flax)
    np.testing.assert_array_equal(v_ours["params"]["kernel"], v_flax["params"]["kernel"])
    np.testing.assert_allclose(DepthwiseConv(**kw).apply(v_ours, x), nn.Conv(**kw).apply(v_flax, x), atol=1e-5)
    with pytest.raises(ValueError, match="features 4, groups 4 and input channels 5"):
        DepthwiseConv(**kw).init(jax.random.key(0), jnp.zeros((1, 8, 8, 5)))


def test_conv_norm_act_picks_depthwise_only_for_depthwise():
    def conv_type(groups, features, channels):
        module = ConvNormAct(features, 3, groups=groups)
        seen = []

        def record(next_fun, args, kwargs, context):
            if context.module.name == "conv":
                seen.append(type(context.module))
            return next_fun(*args, **kwargs)
        with nn.intercept_methods(record):
            jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 8, 8, channels)), train=False))
        return seen[0]

    assert conv_type(8, 8, 8) is DepthwiseConv
    assert conv_type(1, 8, 8) is nn.Conv
    assert conv_type(4, 8, 8) is nn.Conv  # grouped, not depthwise
    assert conv_type(8, 16, 8) is nn.Conv  # channel multiplier 2
