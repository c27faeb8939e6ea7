"""The Vision Transformer in Flax linen (Dosovitskiy et al. 2020, arXiv 2010.11929).

Pure model code: no files, datasets, devices or optimizers here. Module and parameter
names equal the keys of the released checkpoints (`embedding`, `cls`,
`Transformer/posembed_input`, `Transformer/encoderblock_{i}`, `Transformer/encoder_norm`,
`pre_logits`, `head`; big_vision's `MAPHead_0` for the attention-pooling head), so
`vit_jax.checkpoint` maps the official `.npz` files onto this tree with no renaming (only
`scan=True` stacks the blocks on a leading axis).

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
from vit_core.variants import decode_variant
from vit_jax import ops
from vit_jax.attention import dot_product_attention

Dtype = Any
Array = jax.Array

# Initialisers of the official implementation; the released weights were trained with them.
_xavier = nn.initializers.xavier_uniform()
_posemb_init = nn.initializers.normal(stddev=0.02)
_mlp_bias_init = nn.initializers.normal(stddev=1e-6)
LAYER_NORM_EPS = 1e-6
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

    Statistics in float32; the backward pass saves only the input (see `vit_jax.ops`).
    """

    epsilon: float = LAYER_NORM_EPS
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
    The attention itself is `vit_jax.attention.dot_product_attention`: by default a
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
    attention_impl: str | None = None
    deterministic: bool = True
    return_weights: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, drop_path_rate: float | Array = 0.0) -> tuple[Array, Any]:
        ln = functools.partial(LayerNorm, dtype=self.dtype)
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
            gelu_approximate=self.gelu_approximate, attention_impl=self.attention_impl,
            deterministic=not train, return_weights=return_weights, dtype=self.dtype,
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
        x = LayerNorm(dtype=self.dtype, name="encoder_norm")(x)
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
        z = LayerNorm(dtype=self.dtype, name="LayerNorm_0")(y)
        y = y + MlpBlock(
            mlp_dim=self.mlp_dim, gelu_approximate=self.gelu_approximate, dtype=self.dtype,
            name="MlpBlock_0",
        )(z, deterministic=True)  # (B, 1, D)
        return y[:, 0]  # (B, D)


CLASSIFIERS = ("token", "gap", "map")
POSEMBS = ("learn", "sincos2d")


class VisionTransformer(nn.Module):
    """ViT: patches → tokens (+ class token, + position) → encoder → pool → head.

    Attributes:
      num_classes: outputs of the head; 0 means no head (returns pre-logits features).
      patch_size: side P of the square patches; image sides must be multiples of it.
      hidden_size, num_layers, num_heads, mlp_dim: the transformer size (see variants.py).
      classifier: "token" (class token, the paper's default), "gap" (mean of all tokens
        after the final LayerNorm) or "map" (`MAPHead`: attention pooling by a learned
        probe, as big_vision / SigLIP). Only "token" has a class token.
      posemb: "learn" (a learned (1, N, D) embedding over every token, class token
        included: the official ViT and its released weights) or "sincos2d" (the fixed
        `vit_core.posemb.sincos_2d` table, no parameter, any image size). sincos2d is added
        to the patch tokens only, as big_vision does: the class token gets no position.
      representation_size: if set, a Dense+tanh "pre_logits" layer of this width before the
        head (the released ImageNet-21k models have it); None means identity.
      dropout_rate, attention_dropout_rate: dropout after MLP/attention, on attention weights.
      stochastic_depth: the last block's drop-path rate (linear from 0 over the depth).
      gelu_approximate: True = tanh GELU as the official code and the released weights;
        False = the exact erf GELU that timm uses.
      attention_impl: None (vit_jax's softmax attention, hand-written backward), "xla" or
        "cudnn" (`jax.nn.dot_product_attention`); see `vit_jax.attention`.
      remat: recompute each block's activations in the backward pass (saves memory);
        the same as remat_policy="none".
      remat_policy: what each block saves for the backward pass: "default" (everything
        autodiff saves, or nothing with `remat`), "none" (nothing: the block is recomputed)
        or "dots" (the Dense layers' outputs); see `REMAT_POLICIES`.
      scan: run the blocks with `nn.scan` (compile time independent of depth).
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
      head_bias_init: initial head bias (the official code uses 0; -10 for fine-tuning).
    """

    num_classes: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    classifier: str = "token"
    posemb: str = "learn"
    representation_size: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    gelu_approximate: bool = True
    attention_impl: str | None = None
    remat: bool = False
    remat_policy: str = "default"
    scan: bool = False
    dtype: Dtype = jnp.float32
    head_bias_init: float = 0.0

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
        self._check_options()
        self._check_images(images)
        # --- forward_features: tokens through the encoder.
        x = PatchEmbed(self.hidden_size, self.patch_size, dtype=self.dtype, name="embedding")(
            images
        )  # (B, N, D)
        prefix = 1 if self.classifier == "token" else 0
        if prefix:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_size))
            cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, self.hidden_size))
            x = jnp.concatenate([cls, x], axis=1)  # (B, 1 + N, D)
        embedded = x
        fixed_posemb = None
        if self.posemb == "sincos2d":
            grid = (images.shape[1] // self.patch_size, images.shape[2] // self.patch_size)
            table = sincos_2d(*grid, self.hidden_size)  # (1, N, D)
            # A zero row for the class token: the same sum as big_vision's posemb-then-cls.
            fixed_posemb = np.pad(table, ((0, 0), (prefix, 0), (0, 0)))  # (1, prefix + N, D)
        encoded, hidden_states, attn = Encoder(
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth, gelu_approximate=self.gelu_approximate,
            attention_impl=self.attention_impl, remat=self.remat,
            remat_policy=self.remat_policy, scan=self.scan,
            dtype=self.dtype, name="Transformer",
        )(x, train=train, return_weights=return_attention, fixed_posemb=fixed_posemb)
        # --- pool: the class token, the mean over tokens or MAP (after the final norm).
        if self.classifier == "map":
            x = MAPHead(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                        gelu_approximate=self.gelu_approximate, dtype=self.dtype)(encoded)
        elif self.classifier == "token":
            x = encoded[:, 0]  # (B, D)
        else:
            x = encoded.mean(axis=1)  # (B, D)
        # --- forward_head: optional pre-logits, then the linear classifier.
        if self.representation_size is not None:
            x = nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x)
            x = jnp.tanh(x)  # (B, R)
        pre_logits = x
        if self.num_classes:
            x = nn.Dense(
                self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
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

    def _check_options(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"classifier must be one of {CLASSIFIERS}, got "
                              f"{self.classifier!r} (config.model.classifier).")
        if self.posemb not in POSEMBS:
            raise ConfigError(f"posemb must be one of {POSEMBS}, got {self.posemb!r} "
                              "(config.model.posemb).")
        if self.posemb == "sincos2d" and (self.hidden_size % 4 or self.hidden_size < 8):
            raise ConfigError(f"posemb='sincos2d' needs a hidden_size that is a multiple of 4 "
                              f"(and ≥ 8), got {self.hidden_size}; use posemb='learn'.")

    def _check_images(self, images: Array) -> None:
        if images.ndim != 4:
            raise ValueError(f"Expected images of shape (B, H, W, 3), got {images.shape}.")
        _, h, w, c = images.shape
        if c != 3:
            raise ValueError(
                f"Expected 3 colour channels in the last axis (B, H, W, 3), got {c} "
                f"(shape {images.shape}). Grayscale images must be repeated to RGB."
            )
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"Image size {h}x{w} is not divisible by the patch size {self.patch_size}."
            )


def create_model(variant: str, *, num_classes: int, **overrides: Any) -> VisionTransformer:
    """Builds the linen module for a named variant.

    Args:
      variant: a name from the variant table, e.g. "B/16" (see `vit_core.variants`).
      num_classes: size of the classification head (0 for no head).
      **overrides: any other `VisionTransformer` attribute (classifier, dtype, scan, ...),
        including the variant's own sizes (e.g. patch_size=8 on the "testing" variant).

    Returns:
      The `VisionTransformer` module; initialise it with `module.init(rng, images)`.
    """
    spec = decode_variant(variant)
    kwargs: dict[str, Any] = dict(
        patch_size=spec.patch_size, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, num_heads=spec.num_heads, mlp_dim=spec.mlp_dim,
    )
    fields = set(VisionTransformer.__dataclass_fields__) - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"Unknown VisionTransformer option(s) {unknown}; known: {sorted(fields)}.")
    kwargs.update(overrides)
    return VisionTransformer(num_classes=num_classes, **kwargs)


def model_from_config(model_config: Any, num_classes: int) -> VisionTransformer:
    """The model a config describes: the one place that maps config fields to options.

    Args:
      model_config: `config.model` of a `configs/` file (a ConfigDict or a plain mapping):
        `variant` names the size; every other field is a `VisionTransformer` option of the
        same name (`patch_size=None` keeps the variant's; `dtype` is a dtype name).
      num_classes: size of the classification head (0 for no head).

    Returns:
      The `VisionTransformer` module.
    """
    options = dict(model_config.items())
    variant = options.pop("variant")
    if options.get("patch_size") is None:
        options.pop("patch_size", None)
    if "dtype" in options:
        options["dtype"] = jnp.dtype(options["dtype"])
    return create_model(variant, num_classes=num_classes, **options)


def param_shapes(model: VisionTransformer, image_size: int) -> Any:
    """The parameter tree's shapes and dtypes, without allocating (via `jax.eval_shape`).

    Args:
      model: the module.
      image_size: side of the square input images.

    Returns:
      A pytree of `jax.ShapeDtypeStruct` with the same structure as `init(...)["params"]`.
    """
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(images.shape)))
    return variables["params"]


def count_params(tree: Any) -> int:
    """Total number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
