"""GELU / LayerNorm with hand-written backward passes: same values, same gradients, and
(almost) only their inputs saved for the backward pass."""

import contextlib
import io
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from vit_core.variants import decode_variant
from vit_jax.model import ops
from vit_jax.model import vit as models


@pytest.mark.parametrize("approximate", [True, False])
def test_gelu_values_and_gradient_equal_autodiff(approximate):
    x = jnp.linspace(-6.0, 6.0, 1001)
    np.testing.assert_array_equal(ops.gelu(x, approximate), jax.nn.gelu(x, approximate))
    ours = jax.grad(lambda x: ops.gelu(x, approximate).sum())(x)
    ref = jax.grad(lambda x: jax.nn.gelu(x, approximate).sum())(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_gelu_gradient_keeps_bfloat16():
    x = jnp.linspace(-4.0, 4.0, 64).astype(jnp.bfloat16)
    g = jax.grad(lambda x: ops.gelu(x, True).astype(jnp.float32).sum())(x)
    ref = jax.grad(lambda x: jax.nn.gelu(x, True).sum())(x.astype(jnp.float32))
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32), ref, rtol=1e-2, atol=1e-2)


def _reference_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * scale + bias


def test_layer_norm_equals_flax_and_autodiff():
    kx, ks, kb, kc = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (3, 5, 16)) * 3 + 1
    scale, bias = jax.random.normal(ks, (16,)), jax.random.normal(kb, (16,))
    cot = jax.random.normal(kc, x.shape)
    flax_y = nn.LayerNorm(epsilon=1e-6).apply({"params": {"scale": scale, "bias": bias}}, x)
    np.testing.assert_allclose(ops.layer_norm(x, scale, bias, 1e-6), flax_y, rtol=1e-5,
                               atol=1e-5)
    ours = jax.grad(lambda *a: (ops.layer_norm(*a, 1e-6) * cot).sum(), argnums=(0, 1, 2))(
        x, scale, bias)
    ref = jax.grad(lambda *a: (_reference_layer_norm(*a) * cot).sum(), argnums=(0, 1, 2))(
        x, scale, bias)
    for name, a, b in zip(("x", "scale", "bias"), ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def _saved_shapes(scan: bool) -> list[str]:
    model = models.create_model("testing", num_classes=10, dtype=jnp.bfloat16, scan=scan)
    x = jnp.zeros((2, 32, 32, 3))
    params = model.init(jax.random.key(0), x)["params"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(lambda p: model.apply({"params": p}, x).sum(), params)
    return re.findall(r"^(\w+\[[\d,]*\])", buf.getvalue(), flags=re.M)


@pytest.mark.parametrize("scan", [False, True])
def test_backward_keeps_two_mlp_activations_and_no_float32_tokens(scan):
    spec = decode_variant("testing")
    shapes = _saved_shapes(scan)
    tokens = f"2,{(32 // spec.patch_size) ** 2 + 1}"
    mlp = [s for s in shapes if s.endswith(f",{spec.mlp_dim}]") and tokens in s]
    # Per block the MLP pre-activation and the GELU output (under nn.scan, each stacked
    # over the layers); tanh is recomputed; autodiff of jax.nn.gelu keeps 6.
    assert len(mlp) == 2 * (1 if scan else spec.num_layers), shapes
    assert not [s for s in shapes if s.startswith("f32[") and s.endswith(
        f"{tokens},{spec.hidden_size}]")], shapes
