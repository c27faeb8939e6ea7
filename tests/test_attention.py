"""The attention implementations compute the same function and the same gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.model import attention


def _qkv(n=13, b=2, k=3, dh=8, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    return [jax.random.normal(kk, (b, n, k, dh), jnp.float32).astype(dtype) for kk in keys]


def _reference(q, k, v):
    """softmax(q·kᵀ/√Dh)·v written out in float64 numpy."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    logits = np.einsum("bqkh,bvkh->bkqv", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bkqv,bvkh->bqkh", w, v)


@pytest.mark.parametrize("impl", [None, "xla"])
def test_forward_equals_float64_reference(impl):
    q, k, v = _qkv()
    got = attention.dot_product_attention(q, k, v, impl)
    np.testing.assert_allclose(got, _reference(q, k, v), rtol=1e-5, atol=1e-6)


def test_hand_written_backward_equals_autodiff():
    q, k, v = _qkv()
    cot = jax.random.normal(jax.random.key(1), q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * cot)

    ours = jax.grad(loss(attention.softmax_attention), argnums=(0, 1, 2))(q, k, v)
    xla = jax.grad(loss(lambda *t: jax.nn.dot_product_attention(*t, implementation="xla")),
                   argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", ours, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")
    # The check can fail: a wrong backward (e.g. a missing scale) is far off.
    assert not np.allclose(ours[0] * 2, xla[0], atol=1e-5)


def test_hand_written_backward_in_bfloat16_keeps_dtype_and_is_close():
    q, k, v = _qkv(dtype=jnp.bfloat16)
    grads = jax.grad(lambda *t: attention.softmax_attention(*t).astype(jnp.float32).sum(),
                     argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *t: attention.softmax_attention(*t).sum(), argnums=(0, 1, 2))(
        *(t.astype(jnp.float32) for t in (q, k, v)))
    for g, r in zip(grads, ref, strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), r, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("n", [13, 16, 197])
def test_padding_tokens_with_a_mask_changes_nothing(n):
    """The cuDNN path pads N to a multiple; checked here through the XLA implementation."""
    q, k, v = _qkv(n=n)
    padded = lambda *t: attention.padded_attention(*t, multiple=16, implementation="xla")
    np.testing.assert_allclose(padded(q, k, v), _reference(q, k, v), rtol=1e-5, atol=1e-6)
    g_pad = jax.grad(lambda *t: padded(*t).sum(), argnums=(0, 1, 2))(q, k, v)
    g_ref = jax.grad(lambda *t: attention.softmax_attention(*t).sum(), argnums=(0, 1, 2))(
        q, k, v)
    for a, b in zip(g_pad, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_unknown_implementation_is_named():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"'flash'.*expected one of"):
        attention.dot_product_attention(q, k, v, "flash")
