"""Analytic FLOP counts of the ViT, and a measured matmul peak to compute MFU against.

The count is the usual one for transformers (Kaplan et al. 2020; the ViT and DeiT papers
report the same numbers): multiply-accumulates (MACs) of every matrix product of the
forward pass, and nothing for LayerNorm, softmax, GELU, biases or residual adds.
A training step costs 3 forward passes (forward, and backward w.r.t. activations and
weights), so training FLOPs = 6 × forward MACs and inference FLOPs = 2 × forward MACs.

    python -c "from vit_jax.model import flops; print(flops.forward_macs('B/16', 224) / 1e9)"
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from vit_core.variants import decode_variant


@dataclasses.dataclass(frozen=True)
class MacBreakdown:
    """Forward MACs of one image, by part of the model (all layers summed)."""

    patch_embed: int  # (N-P) × P²C × D: the stride-P convolution as one GEMM
    qkv: int  # L × N × D × 3D
    attention_scores: int  # L × N × N × D (q·kᵀ over all heads)
    attention_values: int  # L × N × N × D (weights · v)
    out_proj: int  # L × N × D × D
    mlp: int  # L × 2 × N × D × M
    pre_logits: int  # D × R (representation layer, if any)
    head: int  # (R or D) × num_classes

    @property
    def total(self) -> int:
        """All forward MACs of one image."""
        return sum(dataclasses.astuple(self))


def macs_breakdown(
    variant: str, image_size: int = 224, *, num_classes: int = 1000,
    classifier: str = "token", representation_size: int | None = None,
    patch_size: int | None = None,
) -> MacBreakdown:
    """Forward multiply-accumulates of one image, part by part.

    Args:
      variant: a name from `vit_core.variants.VARIANTS`, e.g. "B/16".
      image_size: side of the square input images.
      num_classes: width of the head (0: no head).
      classifier: "token" adds the class token to the sequence; "gap" does not.
      representation_size: width of the optional pre-logits layer.
      patch_size: overrides the variant's patch size.

    Returns:
      The `MacBreakdown`; `.total` is the forward MAC count.
    """
    spec = decode_variant(variant)
    p = patch_size or spec.patch_size
    d, m, layers = spec.hidden_size, spec.mlp_dim, spec.num_layers
    patches = (image_size // p) ** 2
    n = patches + (1 if classifier == "token" else 0)  # sequence length N
    width = representation_size or d
    return MacBreakdown(
        patch_embed=patches * p * p * 3 * d,
        qkv=layers * n * d * 3 * d,
        attention_scores=layers * n * n * d,
        attention_values=layers * n * n * d,
        out_proj=layers * n * d * d,
        mlp=layers * 2 * n * d * m,
        pre_logits=d * representation_size if representation_size else 0,
        head=width * num_classes,
    )


def forward_macs(variant: str, image_size: int = 224, **kwargs: Any) -> int:
    """Forward MACs of one image (see `macs_breakdown` for the arguments)."""
    return macs_breakdown(variant, image_size, **kwargs).total


def step_flops(variant: str, image_size: int, batch_size: int, mode: str, **kwargs: Any) -> int:
    """Analytic FLOPs of one step of `batch_size` images.

    Args:
      variant, image_size, **kwargs: as `macs_breakdown`.
      batch_size: images per step.
      mode: "train" (6 × forward MACs) or "infer" (2 × forward MACs).

    Returns:
      FLOPs of one step.
    """
    factor = {"train": 6, "infer": 2}[mode]
    return factor * batch_size * forward_macs(variant, image_size, **kwargs)


def matmul_peak_flops(
    dtype: str, *, size: int | None = None, min_time: float = 1.0
) -> dict[str, float]:
    """Measures the dense matmul rate of JAX's default device (the MFU denominator).

    One square `size`³ product, repeated for at least `min_time` seconds after a warm-up,
    blocking on every product. (The PyTorch twin's is `vit_torch.benchmark.matmul_peak_flops`.)

    Args:
      dtype: "float32" or "bfloat16".
      size: matrix side; default 8192 on GPU, 1536 on CPU.
      min_time: seconds of timed products.

    Returns:
      {"tflops": best-of-runs rate, "size": side, "seconds": time of one product}.
    """
    import jax
    import jax.numpy as jnp

    gpu = jax.default_backend() != "cpu"
    size = size or (8192 if gpu else 1536)
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))  # (S, S)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))  # (S, S)
    f = jax.jit(jnp.matmul)
    for _ in range(3):
        f(a, b).block_until_ready()
    best, total, calls = float("inf"), 0.0, 0
    while total < min_time or calls < 5:
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        dt = time.perf_counter() - t0
        best, total, calls = min(best, dt), total + dt, calls + 1
    return {"tflops": 2 * size**3 / best / 1e12, "size": size, "seconds": best}
