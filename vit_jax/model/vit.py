"""The Vision Transformer in Flax linen (Dosovitskiy et al. 2020, arXiv 2010.11929).

Pure model code: no files, datasets, devices or optimizers here. Built from a
`vit_core.spec.ViTSpec` (the architecture); module and parameter names equal the keys of
the released checkpoints as the parameter table `vit_core.params` lists them (`embedding`,
`cls`, `registers`, `Transformer/posembed_input`, `Transformer/encoderblock_{i}`,
`Transformer/encoder_norm`, `pre_logits`, `head`; big_vision's `MAPHead_0` for the
attention-pooling head; a hybrid's ResNet as `conv_root`, `gn_root`, `block{i}/unit{j}`),
so `vit_jax.weights.checkpoint` maps the official `.npz` files onto this tree with no renaming
(only `scan=True` stacks the blocks on a leading axis).

Shapes: B batch, H/W image size, P patch size, N tokens, D width, K heads, Dh = D/K.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_core.errors import ConfigError
from vit_core.posemb import sincos_2d
from vit_core.spec import (
    DEFAULT_LAYER_NORM_EPS,
    GROUPNORM_GROUPS,
    RESNET_ROOT_WIDTH,
    ViTSpec,
    spec_from_config,
)
from vit_jax.model import ops
from vit_jax.model.attention import dot_product_attention

Dtype = Any
Array = jax.Array

# Initialisers of the official implementation; the released weights were trained with them.
_xavier = nn.initializers.xavier_uniform()
_posemb_init = nn.initializers.normal(stddev=0.02)
_mlp_bias_init = nn.initializers.normal(stddev=1e-6)
# What a block keeps for its backward pass (`config.model.remat_policy`); the trade-off
# measured with `python -m vit_jax.memory` is in the README. "default": no rematerialisation
# (everything autodiff saves; with `remat=True`, as "none"); "none": save nothing, recompute
# the block; "dots": save the outputs of the matmuls without batch dimensions (the Dense
# layers), recompute the rest.
REMAT_POLICIES = ("default", "none", "dots")


class PatchEmbed(nn.Module):
    """Non-overlapping P×P patches → D-dim tokens (a stride-P convolution).

    Stored as a conv kernel (P, P, C, D) like the official `embedding` layer, but computed
    as a reshape + one matmul: the same function, and on CPU a plain GEMM is faster than
    XLA's strided convolution.
    """

    hidden_size: int
    patch_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: Array) -> Array:
        b, h, w, c = images.shape
        p = self.patch_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.hidden_size))
        bias = self.param("bias", nn.initializers.zeros, (self.hidden_size,))
        gh, gw = h // p, w // p
        x = images.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, P, P, C)
        x = x.reshape(b, gh * gw, p * p * c).astype(self.dtype)  # (B, N, P*P*C)
        kernel = kernel.reshape(p * p * c, self.hidden_size).astype(self.dtype)
        return x @ kernel + bias.astype(self.dtype)  # (B, N, D)


# The official ResNet's epsilons (`models_resnet.py`): weight standardisation divides by
# std + 1e-5; flax's nn.GroupNorm default epsilon is 1e-6.
STD_CONV_EPS = 1e-5
GROUP_NORM_EPS = 1e-6


class StdConv(nn.Module):
    """Bias-free convolution with weight standardisation ('SAME' padding), param `kernel`.

    The kernel is standardised over (H, W, C_in) per output channel: (w - mean) / (std +
    1e-5), as the official `StdConv`; computed in float32 whatever the compute dtype.
    """

    features: int
    kernel_size: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        w = self.param("kernel", nn.initializers.lecun_normal(),
                       (k, k, x.shape[-1], self.features))  # (k, k, C_in, C_out)
        w = w - w.mean(axis=(0, 1, 2))
        w = w / (w.std(axis=(0, 1, 2)) + STD_CONV_EPS)
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype), w.astype(self.dtype), (self.strides, self.strides), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # (B, H/s, W/s, C_out)


def _group_norm(name: str, dtype: Dtype, **kwargs: Any) -> nn.GroupNorm:
    """The official GroupNorm (32 groups, epsilon 1e-6), statistics in float32."""
    return nn.GroupNorm(num_groups=GROUPNORM_GROUPS, epsilon=GROUP_NORM_EPS, dtype=dtype,
                        param_dtype=jnp.float32, name=name, **kwargs)


class ResidualUnit(nn.Module):
    """Bottleneck unit (official `models_resnet.ResidualUnit`): 1×1 → 3×3 (strided) → 1×1
    to 4·features, each StdConv + GroupNorm, ReLU after the sum; a projection (`conv_proj`,
    `gn_proj`) on the shortcut where the shape changes. `gn3` starts at zero scale."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out = 4 * self.features
        conv = functools.partial(StdConv, dtype=self.dtype)
        residual = x
        if x.shape[-1] != out or self.strides != 1:
            residual = conv(out, 1, self.strides, name="conv_proj")(x)  # (B, H/s, W/s, 4F)
            residual = _group_norm("gn_proj", self.dtype)(residual)
        y = nn.relu(_group_norm("gn1", self.dtype)(conv(self.features, 1, name="conv1")(x)))
        y = conv(self.features, 3, self.strides, name="conv2")(y)  # (B, H/s, W/s, F)
        y = nn.relu(_group_norm("gn2", self.dtype)(y))
        y = conv(out, 1, name="conv3")(y)  # (B, H/s, W/s, 4F)
        y = _group_norm("gn3", self.dtype, scale_init=nn.initializers.zeros)(y)
        return nn.relu(residual + y)


class ResNetStage(nn.Module):
    """A ResNet stage (`block{i}`): `unit1` (at `first_stride`), `unit2`, ...."""

    units: int
    features: int
    first_stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for j in range(self.units):
            stride = self.first_stride if j == 0 else 1
            x = ResidualUnit(self.features, stride, dtype=self.dtype, name=f"unit{j + 1}")(x)
        return x  # (B, H/s, W/s, 4·features)


def resnet_features(images: Array, spec: ViTSpec, dtype: Dtype) -> Array:
    """A hybrid's ResNet v2 (official `models_vit.py`): root block (7×7 stride-2 StdConv,
    GroupNorm, ReLU, 3×3 stride-2 max pool), then the stages `block{i}`, the first at stride
    1 and every later one at stride 2.

    Called from the model's compact `__call__`, so its modules sit at the model's top level
    (`conv_root`, `gn_root`, `block1`, ...), as in the released files.

    Args:
      images: (B, H, W, 3).
      spec: a hybrid spec (`resnet_layers` not None).
      dtype: compute dtype.

    Returns:
      (B, H/s, W/s, C) the feature map, s = `spec.resnet_stride`, C = `spec.resnet_channels`.
    """
    width = RESNET_ROOT_WIDTH * spec.resnet_width
    x = StdConv(width, 7, 2, dtype=dtype, name="conv_root")(images)  # (B, H/2, W/2, 64w)
    x = nn.relu(_group_norm("gn_root", dtype)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")  # (B, H/4, W/4, 64w)
    for i, units in enumerate(spec.resnet_layers or ()):
        x = ResNetStage(units, width * 2 ** i, 1 if i == 0 else 2, dtype=dtype,
                        name=f"block{i + 1}")(x)  # (B, h, w, 4·64w·2^i)
    return x


class AddPositionEmbs(nn.Module):
    """Adds a learned position embedding, shape (1, N, D), to the tokens."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (1, x.shape[1], x.shape[2])
        if self.has_variable("params", "pos_embedding"):
            stored = self.get_variable("params", "pos_embedding").shape
            if tuple(stored) != shape:
                raise ValueError(
                    f"The position embedding has shape {tuple(stored)} but these images give "
                    f"{shape[1]} tokens of width {shape[2]}: a checkpoint made for another "
                    "image size must be resized first (vit_core.posemb.resize_posemb)."
                )
        posemb = self.param("pos_embedding", _posemb_init, shape)
        return x + posemb.astype(x.dtype)  # (B, N, D)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with params `scale`/`bias` (the official names).

    Statistics in float32; the backward pass saves only the input (see `vit_jax.model.ops`).
    """

    epsilon: float = DEFAULT_LAYER_NORM_EPS
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        return ops.layer_norm(x, scale, bias, self.epsilon).astype(self.dtype)  # (..., D)


class MlpBlock(nn.Module):
    """Dense → GELU → dropout → Dense → dropout."""

    mlp_dim: int
    dropout_rate: float = 0.0
    gelu_approximate: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        d = x.shape[-1]
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, kernel_init=_xavier, bias_init=_mlp_bias_init
        )
        y = dense(self.mlp_dim)(x)  # (B, N, mlp_dim)
        y = ops.gelu(y, self.gelu_approximate)  # saves only y for the backward pass
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = dense(d)(y)  # (B, N, D)
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with the official parameter layout (self-attention by default).

    `query`/`key`/`value` kernels are (D, K, Dh) and `out` is (K, Dh, D), as in
    `flax.linen.MultiHeadDotProductAttention`, which produced the released checkpoints.
    The attention itself is `vit_jax.model.attention.dot_product_attention`: by default a
    softmax attention with a hand-written backward, "xla" or "cudnn" for
    `jax.nn.dot_product_attention` (cudnn: the GPU flash kernel). Given `kv`, the queries
    come from `x` and the keys and values from `kv` (cross-attention, the MAP head's); only
    the default implementation takes a query count different from the key count.
    """

    num_heads: int
    dropout_rate: float = 0.0
    attention_impl: str | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, kv: Array | None = None, *, deterministic: bool,
        return_weights: bool = False,
    ) -> tuple[Array, Array | None]:
        kv = x if kv is None else kv
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"hidden_size {d} is not divisible by num_heads {self.num_heads}.")
        head_dim = d // self.num_heads
        proj = functools.partial(
            nn.DenseGeneral, features=(self.num_heads, head_dim), kernel_init=_xavier,
            dtype=self.dtype,
        )
        q = proj(name="query")(x)  # (B, N, K, Dh)
        k = proj(name="key")(kv)  # (B, M, K, Dh), M = N for self-attention
        v = proj(name="value")(kv)  # (B, M, K, Dh)
        weights = None
        if return_weights or (self.dropout_rate > 0.0 and not deterministic):
            # Explicit softmax(q·kᵀ/√Dh): needed to return the weights or to drop them out.
            logits = jnp.einsum("bqkh,bvkh->bkqv", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
            weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # (B, K, N, M)
            dropped = nn.Dropout(self.dropout_rate, broadcast_dims=())(
                weights, deterministic=deterministic
            )
            y = jnp.einsum("bkqv,bvkh->bqkh", dropped.astype(v.dtype), v)  # (B, N, K, Dh)
        else:
            y = dot_product_attention(q, k, v, self.attention_impl)  # (B, N, K, Dh)
        out = nn.DenseGeneral(
            features=d, axis=(-2, -1), kernel_init=_xavier, dtype=self.dtype, name="out"
        )(y)  # (B, N, D)
        return out, weights


def _drop_path(x: Array, rate: float | Array, rng: Array) -> Array:
    """Stochastic depth: zeroes the whole residual branch of a random subset of samples."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Encoder1DBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    gelu_approximate: bool = True
    layer_norm_eps: float = DEFAULT_LAYER_NORM_EPS
    attention_impl: str | None = None
    deterministic: bool = True
    return_weights: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, drop_path_rate: float | Array = 0.0) -> tuple[Array, Any]:
        ln = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype)
        # Explicit names keep the official numbering (LayerNorm_0, ..._1, LayerNorm_2, ..._3).
        y = ln(name="LayerNorm_0")(x)
        y, weights = MultiHeadAttention(
            num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
            attention_impl=self.attention_impl, dtype=self.dtype,
            name="MultiHeadDotProductAttention_1",
        )(y, deterministic=self.deterministic, return_weights=self.return_weights)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        use_drop_path = not self.deterministic and not (
            isinstance(drop_path_rate, float) and drop_path_rate == 0.0
        )
        if use_drop_path:
            y = _drop_path(y, drop_path_rate, self.make_rng("dropout"))
        x = x + y  # (B, N, D)
        y = ln(name="LayerNorm_2")(x)
        y = MlpBlock(
            mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
            gelu_approximate=self.gelu_approximate, dtype=self.dtype, name="MlpBlock_3",
        )(y, deterministic=self.deterministic)
        if use_drop_path:
            y = _drop_path(y, drop_path_rate, self.make_rng("dropout"))
        x = x + y  # (B, N, D)
        # (carry, per-layer output): the second element is what `nn.scan` stacks.
        return x, (x, weights)


def _checkpoint_policy(remat: bool, policy: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint` policy of a block, or None for no rematerialisation."""
    if policy not in REMAT_POLICIES:
        raise ConfigError(f"remat_policy must be one of {REMAT_POLICIES}, got {policy!r} "
                          "(config.model.remat_policy).")
    if policy == "dots":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    if policy == "none" or remat:
        return jax.checkpoint_policies.nothing_saveable
    return None


class Encoder(nn.Module):
    """Position embedding, `num_layers` blocks and the final LayerNorm (`Transformer`).

    The position embedding is the learned `posembed_input` unless the caller passes a
    fixed one (`fixed_posemb`, e.g. the sincos2d table): then the encoder has no posemb
    parameter.
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    gelu_approximate: bool = True
    layer_norm_eps: float = DEFAULT_LAYER_NORM_EPS
    attention_impl: str | None = None
    remat: bool = False
    remat_policy: str = "default"
    scan: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool, return_weights: bool = False,
        fixed_posemb: np.ndarray | None = None,
    ) -> tuple[Array, list[Array], list[Array | None]]:
        if fixed_posemb is None:
            x = AddPositionEmbs(name="posembed_input")(x)  # (B, N, D)
        else:
            x = x + jnp.asarray(fixed_posemb, x.dtype)  # (B, N, D)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        # Stochastic depth grows linearly with depth (DeiT / timm convention).
        drop_rates = np.linspace(0.0, self.stochastic_depth, self.num_layers).tolist()
        block_cls: Callable[..., nn.Module] = Encoder1DBlock
        policy = _checkpoint_policy(self.remat, self.remat_policy)
        # A per-layer rate array only with stochastic depth: a traced 0.0 would run drop-path
        # (a mask per block, kept for the backward pass) for nothing.
        rate_array = self.scan and bool(self.stochastic_depth)
        if policy is not None:
            block_cls = nn.remat(block_cls, prevent_cse=not self.scan, policy=policy,
                                 static_argnums=() if rate_array else (2,))  # (self, x, rate)
        block_kwargs = dict(
            num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            gelu_approximate=self.gelu_approximate, layer_norm_eps=self.layer_norm_eps,
            attention_impl=self.attention_impl, deterministic=not train,
            return_weights=return_weights, dtype=self.dtype,
        )
        if self.scan:
            # One compiled block applied num_layers times: compile time independent of depth.
            # Params gain a leading layer axis; checkpoint.py unstacks them for the npz.
            scanned = nn.scan(
                block_cls, variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=0 if rate_array else nn.broadcast, length=self.num_layers,
            )
            rates = jnp.asarray(drop_rates, jnp.float32) if rate_array else 0.0
            x, (hidden, weights) = scanned(**block_kwargs, name="encoderblock")(x, rates)
            hidden_states = list(hidden)  # num_layers × (B, N, D)
            attn = list(weights) if return_weights else [None] * self.num_layers
        else:
            hidden_states, attn = [], []
            for i in range(self.num_layers):
                x, (_, w) = block_cls(**block_kwargs, name=f"encoderblock_{i}")(x, drop_rates[i])
                hidden_states.append(x)
                attn.append(w)
        x = LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="encoder_norm")(x)
        return x, hidden_states, attn


class MAPHead(nn.Module):
    """Multi-head attention pooling: big_vision's `MAPHead`, the SigLIP image towers' head.

    A learned probe (1, 1, D) attends over all tokens (`MultiHeadDotProductAttention_0`),
    then a residual MLP on its LayerNorm: y = a + MLP(LN(a)). Returns the probe's token.
    As in big_vision: the variant's heads and MLP width, xavier-uniform probe and
    attention kernels, no dropout.
    """

    num_heads: int
    mlp_dim: int
    gelu_approximate: bool = True
    layer_norm_eps: float = DEFAULT_LAYER_NORM_EPS
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, _, d = x.shape
        probe = self.param("probe", _xavier, (1, 1, d))
        probe = jnp.broadcast_to(probe.astype(x.dtype), (b, 1, d))  # (B, 1, D)
        # One query: the default attention (the padded cuDNN path assumes as many queries
        # as keys), which is exact for any query count.
        y, _ = MultiHeadAttention(
            num_heads=self.num_heads, dtype=self.dtype, name="MultiHeadDotProductAttention_0"
        )(probe, x, deterministic=True)  # (B, 1, D)
        z = LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="LayerNorm_0")(y)
        y = y + MlpBlock(
            mlp_dim=self.mlp_dim, gelu_approximate=self.gelu_approximate, dtype=self.dtype,
            name="MlpBlock_0",
        )(z, deterministic=True)  # (B, 1, D)
        return y[:, 0]  # (B, D)


class VisionTransformer(nn.Module):
    """ViT: patches → tokens (+ class token, registers, position) → encoder → pool → head.

    Attributes:
      spec: the architecture (`vit_core.spec.ViTSpec`: sizes, head, classifier, posemb,
        registers, LayerNorm epsilon, GELU form; see there). The learned position
        embedding takes its shape from the images at `init` (made for `spec.image_size`).
      dropout_rate, attention_dropout_rate: dropout after MLP/attention, on attention weights.
      stochastic_depth: the last block's drop-path rate (linear from 0 over the depth).
      attention_impl: None (vit_jax's softmax attention, hand-written backward), "xla" or
        "cudnn" (`jax.nn.dot_product_attention`); see `vit_jax.model.attention`.
      remat: recompute each block's activations in the backward pass (saves memory);
        the same as remat_policy="none".
      remat_policy: what each block saves for the backward pass: "default" (everything
        autodiff saves, or nothing with `remat`), "none" (nothing: the block is recomputed)
        or "dots" (the Dense layers' outputs); see `REMAT_POLICIES`.
      scan: run the blocks with `nn.scan` (compile time independent of depth).
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
      head_bias_init: initial head bias (the official code uses 0; -10 for fine-tuning).
    """

    spec: ViTSpec
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    attention_impl: str | None = None
    remat: bool = False
    remat_policy: str = "default"
    scan: bool = False
    dtype: Dtype = jnp.float32
    head_bias_init: float = 0.0

    # Read-only views of the spec that callers use most (the spec stays the one source).
    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def classifier(self) -> str:
        return self.spec.classifier

    @nn.compact
    def __call__(
        self,
        images: Array,
        *,
        train: bool = False,
        return_features: bool = False,
        return_attention: bool = False,
    ) -> Array | tuple[Array, dict[str, Any]]:
        """Classifies a batch of images.

        Args:
          images: (B, H, W, 3) floats, scaled to [-1, 1] by the input pipeline.
          train: enables dropout and stochastic depth (needs a "dropout" rng).
          return_features: also return a dict of named intermediates: "embedded" (tokens
            before the encoder), "block_{i}" (each block's output), "encoded" (after the
            final norm), "pre_logits" (pooled features) and, with `return_attention`,
            "attention_{i}" (B, K, N, N) softmax weights of every block.
          return_attention: compute attention weights explicitly (for visualisation).

        Returns:
          (B, num_classes) float32 logits, or (logits, features) with `return_features`.
        """
        spec = self.spec.validate()
        self._check_images(images)
        d = spec.hidden_size
        # --- forward_features: tokens through the encoder.
        pixels = images
        if spec.is_hybrid:  # the patches are taken of the ResNet's feature map
            pixels = resnet_features(images, spec, self.dtype)  # (B, H/s, W/s, C)
        x = PatchEmbed(d, spec.patch_size, dtype=self.dtype, name="embedding")(pixels)  # (B, N, D)
        prefix = []
        if spec.has_class_token:
            prefix.append(self.param("cls", nn.initializers.zeros, (1, 1, d)))
        if spec.num_registers:
            prefix.append(self.param("registers", _posemb_init, (1, spec.num_registers, d)))
        if prefix:
            tokens = [jnp.broadcast_to(t.astype(x.dtype), (x.shape[0], *t.shape[1:]))
                      for t in prefix]
            x = jnp.concatenate([*tokens, x], axis=1)  # (B, prefix + N, D): cls, registers
        embedded = x
        fixed_posemb = None
        if spec.posemb == "sincos2d":
            grid = (images.shape[1] // spec.total_stride, images.shape[2] // spec.total_stride)
            table = sincos_2d(*grid, d)  # (1, N, D)
            # Zero rows for the prefix: the same sum as big_vision's posemb-then-cls.
            fixed_posemb = np.pad(table, ((0, 0), (spec.num_prefix_tokens, 0), (0, 0)))
        encoded, hidden_states, attn = Encoder(
            num_layers=spec.num_layers, num_heads=spec.num_heads, mlp_dim=spec.mlp_dim,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth, gelu_approximate=spec.gelu_approximate,
            layer_norm_eps=spec.layer_norm_eps, attention_impl=self.attention_impl,
            remat=self.remat, remat_policy=self.remat_policy, scan=self.scan,
            dtype=self.dtype, name="Transformer",
        )(x, train=train, return_weights=return_attention, fixed_posemb=fixed_posemb)
        # --- pool: the class token, or the mean of / attention over the patch tokens (the
        # registers are dropped, as timm does), after the final norm.
        if spec.classifier == "map":
            x = MAPHead(num_heads=spec.num_heads, mlp_dim=spec.mlp_dim,
                        gelu_approximate=spec.gelu_approximate,
                        layer_norm_eps=spec.layer_norm_eps, dtype=self.dtype,
                        )(encoded[:, spec.num_prefix_tokens:])  # (B, D)
        elif spec.classifier == "token":
            x = encoded[:, 0]  # (B, D)
        else:
            x = encoded[:, spec.num_prefix_tokens:].mean(axis=1)  # (B, D): no registers
        # --- forward_head: optional pre-logits, then the linear classifier.
        if spec.representation_size is not None:
            x = nn.Dense(spec.representation_size, dtype=self.dtype, name="pre_logits")(x)
            x = jnp.tanh(x)  # (B, R)
        pre_logits = x
        if spec.num_classes:
            x = nn.Dense(
                spec.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                bias_init=nn.initializers.constant(self.head_bias_init), name="head",
            )(x)  # (B, num_classes)
        logits = x.astype(jnp.float32)
        if not return_features:
            return logits
        features: dict[str, Any] = {"embedded": embedded, "encoded": encoded,
                                    "pre_logits": pre_logits}
        for i, h in enumerate(hidden_states):
            features[f"block_{i}"] = h
        if return_attention:
            for i, w in enumerate(attn):
                features[f"attention_{i}"] = w
        return logits, features

    def _check_images(self, images: Array) -> None:
        if images.ndim != 4:
            raise ValueError(f"Expected images of shape (B, H, W, 3), got {images.shape}.")
        _, h, w, c = images.shape
        if c != 3:
            raise ValueError(
                f"Expected 3 colour channels in the last axis (B, H, W, 3), got {c} "
                f"(shape {images.shape}). Grayscale images must be repeated to RGB."
            )
        s = self.spec.total_stride
        if h % s or w % s:
            what = "total stride (ResNet × patch)" if self.spec.is_hybrid else "patch size"
            raise ValueError(f"Image size {h}x{w} is not divisible by the {what} {s}.")


# The module's keywords besides the spec: how a run computes, not what the model is.
RUN_OPTIONS = tuple(f for f in VisionTransformer.__dataclass_fields__
                    if f not in ("spec", "parent", "name"))


def create_model(variant: str, *, num_classes: int, **overrides: Any) -> VisionTransformer:
    """Builds the linen module for a named variant.

    Args:
      variant: a name from the variant table, e.g. "B/16" (see `vit_core.variants`).
      num_classes: size of the classification head (0 for no head).
      **overrides: a `ViTSpec` field (classifier, image_size, num_registers, the variant's
        own sizes such as patch_size=8, ...) or a `VisionTransformer` run option (dtype,
        scan, ...).

    Returns:
      The `VisionTransformer` module; initialise it with `module.init(rng, images)`.
    """
    run = {k: overrides.pop(k) for k in list(overrides) if k in RUN_OPTIONS}
    spec = ViTSpec.from_variant(variant, num_classes=num_classes, **overrides)
    return VisionTransformer(spec, **run)


def model_from_config(model_config: Any, num_classes: int, image_size: Any = 224
                      ) -> VisionTransformer:
    """The model a config describes: the one place that maps config fields to a model.

    Args:
      model_config: `config.model` of a `configs/` file (a ConfigDict or a plain mapping):
        the architecture fields go to the spec (`vit_core.spec.spec_from_config`), the run
        settings to the module (`dtype` is a dtype name).
      num_classes: size of the classification head (0 for no head).
      image_size: `config.image_size`, the images the learned posemb is made for.

    Returns:
      The `VisionTransformer` module.
    """
    options = dict(model_config.items())
    run = {k: options[k] for k in RUN_OPTIONS if k in options}
    if "dtype" in run:
        run["dtype"] = jnp.dtype(run["dtype"])
    arch = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    spec = spec_from_config(arch, image_size=image_size, num_classes=num_classes)
    return VisionTransformer(spec, **run)


def param_shapes(model: VisionTransformer, image_size: int | tuple[int, int] | None = None
                 ) -> Any:
    """The parameter tree's shapes and dtypes, without allocating (via `jax.eval_shape`).

    Args:
      model: the module.
      image_size: side (or (H, W)) of the input images; default: the spec's.

    Returns:
      A pytree of `jax.ShapeDtypeStruct` with the same structure as `init(...)["params"]`.
    """
    h, w = model.spec.image_size if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else image_size)
    images = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(images.shape)))
    return variables["params"]


def count_params(tree: Any) -> int:
    """Total number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
