"""Analytic FLOP counts of the ViT, and a measured matmul peak to compute MFU against.

The count is the usual one for transformers (Kaplan et al. 2020; the ViT and DeiT papers
report the same numbers): multiply-accumulates (MACs) of every matrix product and
convolution of the forward pass, and nothing for LayerNorm, GroupNorm, softmax, GELU,
pooling, biases or residual adds. A training step costs 3 forward passes (forward, and
backward w.r.t. activations and weights), so training FLOPs = 6 × forward MACs and
inference FLOPs = 2 × forward MACs. Everything is read off the `ViTSpec`: hybrids count
their ResNet, "map" models their attention-pooling head, registers their extra tokens.

    python -c "from vit_core.spec import ViTSpec; from vit_jax.model import flops
    print(flops.forward_macs(ViTSpec.from_variant('B/16')) / 1e9)"
"""

from __future__ import annotations

import dataclasses
import math
import time

from vit_core.spec import RESNET_ROOT_WIDTH, ViTSpec


@dataclasses.dataclass(frozen=True)
class MacBreakdown:
    """Forward MACs of one image, by part of the model (all layers summed)."""

    resnet: int  # a hybrid's ResNet convolutions (0 for a plain ViT)
    patch_embed: int  # N_p × P²C × D: the stride-P convolution as one GEMM
    qkv: int  # L × N × D × 3D
    attention_scores: int  # L × N × N × D (q·kᵀ over all heads)
    attention_values: int  # L × N × N × D (weights · v)
    out_proj: int  # L × N × D × D
    mlp: int  # L × 2 × N × D × M
    map_head: int  # "map": one probe query over the N_p patch tokens, and its MLP
    pre_logits: int  # D × R (representation layer, if any)
    head: int  # (R or D) × num_classes

    @property
    def total(self) -> int:
        """All forward MACs of one image."""
        return sum(dataclasses.astuple(self))


def resnet_macs(spec: ViTSpec) -> int:
    """Forward MACs of a hybrid's ResNet (`vit_jax.model.vit.resnet_features`), one image.

    "SAME" convolutions: a stride-s layer maps a side of n pixels to ceil(n / s). Each
    bottleneck unit: 1×1 conv at its input size, the (strided) 3×3, 1×1 to 4F, and a
    1×1 projection of the shortcut in the first unit of a stage.

    Args:
      spec: the architecture; a plain ViT has no ResNet (0).

    Returns:
      The MAC count.
    """
    if not spec.is_hybrid:
        return 0
    h, w = (math.ceil(n / 2) for n in spec.image_size)  # the 7×7 stride-2 root conv
    width = RESNET_ROOT_WIDTH * spec.resnet_width
    macs = h * w * 7 * 7 * 3 * width
    h, w, channels = math.ceil(h / 2), math.ceil(w / 2), width  # the 3×3 stride-2 max pool
    for i, units in enumerate(spec.resnet_layers or ()):
        features, out = width * 2**i, 4 * width * 2**i
        for j in range(units):
            stride = 2 if i > 0 and j == 0 else 1
            h_out, w_out = math.ceil(h / stride), math.ceil(w / stride)
            macs += h * w * channels * features  # conv1, 1×1 at the input size
            macs += h_out * w_out * 9 * features * features  # conv2, 3×3, strided
            macs += h_out * w_out * features * out  # conv3, 1×1 to 4F
            if channels != out or stride != 1:
                macs += h_out * w_out * channels * out  # conv_proj on the shortcut
            h, w, channels = h_out, w_out, out
    return macs


def macs_breakdown(spec: ViTSpec) -> MacBreakdown:
    """Forward multiply-accumulates of one image of `spec.image_size`, part by part.

    Args:
      spec: the architecture (e.g. `ViTSpec.from_variant("B/16", image_size=384)`).

    Returns:
      The `MacBreakdown`; `.total` is the forward MAC count.
    """
    d, m, layers, p = spec.hidden_size, spec.mlp_dim, spec.num_layers, spec.patch_size
    patches = spec.num_patches
    n = patches + spec.num_prefix_tokens  # sequence length N: class token, registers
    map_head = 0
    if spec.classifier == "map":  # q of one probe; k, v of the patches; out; the MLP
        map_head = d * d + patches * 2 * d * d + 2 * patches * d + d * d + 2 * d * m
    return MacBreakdown(
        resnet=resnet_macs(spec),
        patch_embed=patches * p * p * spec.resnet_channels * d,
        qkv=layers * n * d * 3 * d,
        attention_scores=layers * n * n * d,
        attention_values=layers * n * n * d,
        out_proj=layers * n * d * d,
        mlp=layers * 2 * n * d * m,
        map_head=map_head,
        pre_logits=d * spec.representation_size if spec.representation_size else 0,
        head=spec.pooled_width * spec.num_classes,
    )


def forward_macs(spec: ViTSpec) -> int:
    """Forward MACs of one image (see `macs_breakdown`)."""
    return macs_breakdown(spec).total


def step_flops(spec: ViTSpec, batch_size: int, mode: str) -> int:
    """Analytic FLOPs of one step of `batch_size` images.

    Args:
      spec: the architecture, at the step's image size.
      batch_size: images per step.
      mode: "train" (6 × forward MACs) or "infer" (2 × forward MACs).

    Returns:
      FLOPs of one step.
    """
    factor = {"train": 6, "infer": 2}[mode]
    return factor * batch_size * forward_macs(spec)


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
