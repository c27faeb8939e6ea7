"""GELU and LayerNorm whose backward passes keep (almost) only their input.

Why: autodiff of `jax.nn.gelu` saves six (B, N, 4D) intermediates for the backward pass
and Flax's LayerNorm saves three float32 (B, N, D) ones (`jax.ad_checkpoint.
print_saved_residuals` lists them). Inside one jitted step XLA usually fuses them away,
but not across the loop of `nn.scan`, where every saved array is stacked over the
layers: on CPU the scanned Ti/16 train step was 22% slower and took 45% more memory
than the unrolled one (benchmarks/CPU_PERFORMANCE.md). These versions save the input
(for LayerNorm also the per-token mean and 1/σ) and recompute the rest in the backward
pass, in float32. The forward values are those of `jax.nn.gelu`
and of a two-pass LayerNorm.

Each backward pass starts with `jax.lax.optimization_barrier` on its residuals. Without
it XLA computes the backward's float32 upcast of a saved bfloat16 array once, shares it
with the forward's (CSE), and so keeps a float32 copy alive from the forward to the
backward: XLA's memory analysis of the B/16 bf16 batch-64 train step fell from 11.39 to
9.59 GiB with the barriers (the maths is unchanged; README, "Results").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_COEFF = 0.044715


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def gelu(x: Array, approximate: bool) -> Array:
    """`jax.nn.gelu(x, approximate)` with a backward pass that saves only `x` (and tanh).

    Args:
      x: any shape and float dtype.
      approximate: True for the tanh approximation (the official ViT), False for erf.

    Returns:
      GELU(x), same shape and dtype.
    """
    return jax.nn.gelu(x, approximate=approximate)


def _tanh(x: Array) -> Array:
    """tanh(√(2/π)·(x + 0.044715·x³)), jax.nn.gelu's own expression, in x's dtype."""
    return jnp.tanh(_SQRT_2_OVER_PI * (x + _TANH_COEFF * (x**3)))


def _gelu_fwd(x: Array, approximate: bool) -> tuple[Array, Any]:
    if not approximate:
        return jax.nn.gelu(x, approximate=False), x
    # Only x is saved: keeping tanh too (as until 2026-12-07) saved ~4% of the unrolled CPU
    # train step but cost a (B, N, 4D) array per block (3.5 GiB of B/16 bf16 at batch 256).
    return x * (0.5 * (1.0 + _tanh(x))), x


def _gelu_bwd(approximate: bool, x: Array, dy: Array) -> tuple[Array]:
    x = jax.lax.optimization_barrier(x)  # float32 copies not shared: module docstring
    xf = x.astype(jnp.float32)
    if approximate:
        t = _tanh(x).astype(jnp.float32)  # recomputed exactly as the forward made it
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_COEFF * xf * xf)
        grad = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * du  # d/dx of 0.5·x·(1 + tanh u)
    else:
        cdf = 0.5 * (1.0 + jax.lax.erf(xf / math.sqrt(2.0)))
        pdf = jnp.exp(-0.5 * xf * xf) / math.sqrt(2.0 * math.pi)
        grad = cdf + xf * pdf  # d/dx of x·Φ(x)
    return ((dy.astype(jnp.float32) * grad).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    """LayerNorm over the last axis, statistics in float32 (two-pass variance).

    Args:
      x: (..., D) in any float dtype.
      scale, bias: (D,) parameters.
      epsilon: added to the variance.

    Returns:
      (x − mean) / √(var + ε) · scale + bias, float32 (callers cast to their dtype).
    """
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _normalise(x: Array, epsilon: float) -> tuple[Array, Array, Array]:
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)  # (..., 1)
    centred = xf - mean
    rstd = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + epsilon)  # (..., 1)
    return centred * rstd, mean, rstd


def _layer_norm_fwd(
    x: Array, scale: Array, bias: Array, epsilon: float
) -> tuple[Array, Any]:
    xhat, mean, rstd = _normalise(x, epsilon)
    y = xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y, (x, mean, rstd, scale, bias)


def _layer_norm_bwd(epsilon: float, res: Any, dy: Array) -> tuple[Array, Array, Array]:
    # The barrier keeps XLA from sharing the backward's float32 upcasts with the forward's
    # (see the module docstring): measured with `python -m vit_jax.memory`.
    x, mean, rstd, scale, bias = jax.lax.optimization_barrier(res)
    xhat = (x.astype(jnp.float32) - mean) * rstd  # recomputed, not saved
    dy = dy.astype(jnp.float32)
    g = dy * scale.astype(jnp.float32)
    # dx = (g − mean(g) − x̂·mean(g·x̂)) / σ
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    axes = tuple(range(dy.ndim - 1))
    dscale = (dy * xhat).sum(axes).astype(scale.dtype)
    dbias = dy.sum(axes).astype(bias.dtype)
    return dx.astype(x.dtype), dscale, dbias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
