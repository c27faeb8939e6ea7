"""Scaled dot-product attention for the ViT: pure functions on (B, N, K, Dh) arrays.

Three implementations, picked by `VisionTransformer.attention_impl`:

* None (default): `softmax_attention`, heads moved before tokens and a hand-written
  backward. On XLA:CPU it is the fastest we measured (benchmarks/CPU_PERFORMANCE.md):
  autodiff of `jax.nn.dot_product_attention` computes `o = vᵀ·pᵀ` and materialises a
  transposed (B, K, N, N) probability matrix plus transposed copies of q and k, while this
  backward reuses the saved softmax weights in the layout the forward made them.
* "xla": `jax.nn.dot_product_attention(implementation="xla")`.
* "cudnn": the cuDNN flash kernel through `jax.nn.dot_product_attention`, with the tokens
  padded to a multiple of `CUDNN_TOKEN_MULTIPLE` and the padding masked out by sequence
  lengths (cuDNN rejects ViT's odd token counts, e.g. 197, in some configurations).

Shapes: B batch, N tokens, K heads, Dh head width.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vit_core.errors import ConfigError

Array = jax.Array
IMPLEMENTATIONS = (None, "xla", "cudnn")
CUDNN_TOKEN_MULTIPLE = 16


def dot_product_attention(q: Array, k: Array, v: Array, implementation: str | None) -> Array:
    """softmax(q·kᵀ/√Dh)·v with the chosen implementation.

    Args:
      q, k, v: (B, N, K, Dh) queries, keys and values.
      implementation: None, "xla" or "cudnn" (see the module docstring).

    Returns:
      (B, N, K, Dh) attended values, in the dtype of `v`.
    """
    if implementation is None:
        return softmax_attention(q, k, v)
    if implementation == "xla":
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")
    if implementation == "cudnn":
        return padded_attention(q, k, v, multiple=CUDNN_TOKEN_MULTIPLE, implementation="cudnn")
    raise ConfigError(
        f"Unknown attention implementation {implementation!r}; expected one of {IMPLEMENTATIONS}."
    )


def padded_attention(
    q: Array, k: Array, v: Array, *, multiple: int, implementation: str | None
) -> Array:
    """`jax.nn.dot_product_attention` on tokens zero-padded to a multiple of `multiple`.

    Padded keys are masked through `key_value_seq_lengths`, so they get zero weight; padded
    query rows are computed and then dropped. The result equals unpadded attention.

    Args:
      q, k, v: (B, N, K, Dh).
      multiple: pad N up to a multiple of this.
      implementation: passed on to `jax.nn.dot_product_attention`.

    Returns:
      (B, N, K, Dh).
    """
    b, n = q.shape[:2]
    pad = (-n) % multiple
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(t, widths) for t in (q, k, v))  # (B, N + pad, K, Dh)
    lengths = jnp.full((b,), n, jnp.int32)
    y = jax.nn.dot_product_attention(
        q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    return y[:, :n]  # (B, N, K, Dh)


@jax.custom_vjp
def softmax_attention(q: Array, k: Array, v: Array) -> Array:
    """softmax(q·kᵀ/√Dh)·v in head-major layout, with a hand-written backward.

    Args:
      q, k, v: (B, N, K, Dh); the logits and softmax are computed in float32.

    Returns:
      (B, N, K, Dh) in the dtype of `v`.
    """
    return _softmax_attention_fwd(q, k, v)[0]


def _softmax_attention_fwd(q: Array, k: Array, v: Array) -> tuple[Array, Any]:
    scale = q.shape[-1] ** -0.5
    qh = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3)  # (B, K, N, Dh), pre-scaled
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, K, N, Dh)
    logits = jnp.einsum("bkqh,bkvh->bkqv", qh, kh, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # (B, K, N, N)
    y = jnp.einsum("bkqv,bkvh->bkqh", weights, vh).transpose(0, 2, 1, 3)  # (B, N, K, Dh)
    return y, (qh, kh, vh, weights)


def _softmax_attention_bwd(res: Any, dy: Array) -> tuple[Array, Array, Array]:
    # Not shared with the forward's float32 upcasts (see vit_jax/model/ops.py's docstring).
    qh, kh, vh, weights = jax.lax.optimization_barrier(res)
    scale = qh.shape[-1] ** -0.5
    dyh = dy.transpose(0, 2, 1, 3)  # (B, K, N, Dh)
    dv = jnp.einsum("bkqv,bkqh->bkvh", weights, dyh)  # (B, K, N, Dh)
    dweights = jnp.einsum("bkqh,bkvh->bkqv", dyh, vh, preferred_element_type=jnp.float32)
    w = weights.astype(jnp.float32)
    # Softmax backward: dlogits = w ⊙ (dw − Σ_v dw·w).
    dlogits = (w * (dweights - (dweights * w).sum(-1, keepdims=True))).astype(qh.dtype)
    dq = jnp.einsum("bkqv,bkvh->bkqh", dlogits, kh) * jnp.asarray(scale, qh.dtype)
    dk = jnp.einsum("bkqv,bkqh->bkvh", dlogits, qh)  # qh already carries the scale
    to_token_major = lambda t: t.transpose(0, 2, 1, 3)  # (B, N, K, Dh)
    return to_token_major(dq), to_token_major(dk), to_token_major(dv)


softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)
