"""The Vision Transformer in PyTorch: a reference twin of `vit_jax.model.vit`.

Computes exactly the function of the Flax model, built from the same `vit_core.spec.ViTSpec`
(GELU form, LayerNorm epsilon, registers, "gap" pooling after the final norm, ...), with
timm's parameter names (`patch_embed.proj`, `cls_token`, `reg_token`, `pos_embed`,
`blocks.{i}.attn.qkv`, ...; the MAP head
as timm's `AttentionPoolLatent`: `attn_pool.latent`, `attn_pool.q`, `attn_pool.kv`,
`attn_pool.proj`, `attn_pool.norm`, `attn_pool.mlp.fc1/fc2`; a hybrid's ResNet as timm's
`patch_embed.backbone.stem.*` / `patch_embed.backbone.stages.{i}.blocks.{j}.*`), so timm
users can read its state dicts. The parameter table `vit_core.params` maps them onto the
official `.npz` layout.
No jax or flax import, directly or indirectly: the variant table and the sincos2d
position embedding (`vit_core.posemb`) are numpy-only.

Input is NCHW (B, 3, H, W); features are in the token layout (B, N, D) like the Flax model.
Shapes: B batch, H/W image size, P patch size, N tokens, D width, K heads, Dh = D/K.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vit_core.posemb import sincos_2d
from vit_core.spec import GROUPNORM_GROUPS, RESNET_ROOT_WIDTH, ViTSpec

# Std of a standard normal truncated to [-2, 2]; flax's truncated lecun_normal divides by it
# so that the *truncated* samples have variance 1/fan_in.
_TRUNC_STD = 0.87962566103423978


def _lecun_normal_(weight: Tensor, fan_in: int) -> None:
    """flax `lecun_normal()`: truncated normal in ±2σ with variance 1/fan_in."""
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    nn.init.trunc_normal_(weight, std=std, a=-2.0 * std, b=2.0 * std)


def _xavier_square_(weight: Tensor, fan_in: int, fan_out: int) -> None:
    """Xavier-uniform with explicit fans (a fused qkv matrix must not count as one layer)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)


class PatchEmbed(nn.Module):
    """Non-overlapping P×P patches → D-dim tokens, a stride-P convolution (`embedding`)."""

    def __init__(self, patch_size: int, hidden_size: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P)
        # Row-major flatten of the grid: the token order of the Flax reshape.
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


# The official ResNet's epsilons (as `vit_jax.model.vit`): weight standardisation divides by
# std + 1e-5, GroupNorm adds 1e-6. (timm's hybrids use 1e-8 inside the square root and 1e-5.)
STD_CONV_EPS = 1e-5
GROUP_NORM_EPS = 1e-6


def _same_pad(x: Tensor, k: int, s: int, value: float = 0.0) -> Tensor:
    """TensorFlow/Flax 'SAME' padding of (B, C, H, W) for a k×k window at stride s (the
    extra pixel of an odd total goes after, as XLA pads)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad's order: last axis first
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2d(nn.Conv2d):
    """Bias-free weight-standardised conv with 'SAME' padding (the official `StdConv`):
    each output channel's kernel becomes (w - mean) / (std + 1e-5)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight  # (C_out, C_in, k, k)
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.std(dim=(1, 2, 3), keepdim=True, correction=0) + STD_CONV_EPS)
        x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, w, stride=self.stride)  # (B, C_out, H/s, W/s)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=GROUP_NORM_EPS)


class Downsample(nn.Module):
    """A unit's shortcut projection (`conv_proj`, `gn_proj`): timm's `downsample`."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = StdConv2d(cin, cout, 1, stride)
        self.norm = _group_norm(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))  # (B, C_out, H/s, W/s)


class Bottleneck(nn.Module):
    """Bottleneck unit (official `ResidualUnit`, timm's non-preact `Bottleneck` names)."""

    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = 4 * mid
        needs_projection = cin != cout or stride != 1
        self.downsample = Downsample(cin, cout, stride) if needs_projection else None
        self.conv1, self.norm1 = StdConv2d(cin, mid, 1), _group_norm(mid)
        self.conv2, self.norm2 = StdConv2d(mid, mid, 3, stride), _group_norm(mid)
        self.conv3, self.norm3 = StdConv2d(mid, cout, 1), _group_norm(cout)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, 4F, H/s, W/s)
        y = F.relu(self.norm1(self.conv1(x)))  # (B, F, H, W)
        y = F.relu(self.norm2(self.conv2(y)))  # (B, F, H/s, W/s)
        y = self.norm3(self.conv3(y))  # (B, 4F, H/s, W/s)
        return F.relu(shortcut + y)


class Stem(nn.Module):
    """The root block: 7×7 stride-2 StdConv, GroupNorm, ReLU, 3×3 stride-2 'SAME' max pool."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = StdConv2d(3, width, 7, 2)
        self.norm = _group_norm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))  # (B, 64w, H/2, W/2)
        # -inf padding: the padded pixels never win the max (flax pads max_pool with -inf).
        return F.max_pool2d(_same_pad(x, 3, 2, -math.inf), 3, 2)  # (B, 64w, H/4, W/4)


class Stage(nn.Module):
    def __init__(self, cin: int, mid: int, units: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Bottleneck(cin if j == 0 else 4 * mid, mid,
                                                 stride if j == 0 else 1)
                                      for j in range(units)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ResNet(nn.Module):
    """A hybrid's ResNet v2 with timm's `ResNetV2` names (`stem`, `stages.{i}.blocks.{j}`)."""

    def __init__(self, layers: tuple[int, ...], width_factor: int) -> None:
        super().__init__()
        width = RESNET_ROOT_WIDTH * width_factor
        self.stem = Stem(width)
        stages, cin = [], width
        for i, units in enumerate(layers):
            stages.append(Stage(cin, width * 2 ** i, units, 1 if i == 0 else 2))
            cin = 4 * width * 2 ** i
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (B, C, H/s, W/s)


class HybridEmbed(nn.Module):
    """ResNet feature map → P×P patches → tokens: timm's `HybridEmbed` names (`backbone`,
    `proj`); the root block alone is the backbone itself (timm's `R+Ti/16` layout)."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        layers = spec.resnet_layers or ()
        self.backbone = (ResNet(layers, spec.resnet_width) if layers
                         else Stem(RESNET_ROOT_WIDTH * spec.resnet_width))
        p = spec.patch_size
        self.proj = nn.Conv2d(spec.resnet_channels, spec.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(self.backbone(x))  # (B, D, H/S, W/S), S the total stride
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)  # (B, N, 3, K, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, K, N, Dh)
        drop = self.attn_drop if self.training else 0.0
        weights = None
        if return_weights:
            # Explicit softmax(q·kᵀ/√Dh) in float32, as the Flax model, to return the weights.
            logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, K, N, N)
            weights = logits.float().softmax(dim=-1)  # (B, K, N, N)
            y = F.dropout(weights, drop, self.training).to(v.dtype) @ v  # (B, K, N, Dh)
        else:
            # Default scale 1/√Dh; uses the fused kernels when available.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, K, N, Dh)
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(y), weights


class Mlp(nn.Module):
    """Linear → GELU → dropout → Linear → dropout (`MlpBlock_3`)."""

    def __init__(self, dim: int, mlp_dim: int, drop: float, gelu_approximate: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.drop = nn.Dropout(drop)
        self.approximate = "tanh" if gelu_approximate else "none"

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.fc1(x), approximate=self.approximate)  # (B, N, mlp_dim)
        return self.drop(self.fc2(self.drop(x)))  # (B, N, D)


class AttentionPool(nn.Module):
    """Multi-head attention pooling (`MAPHead_0`), timm's `AttentionPoolLatent` layout.

    A learned latent query (1, 1, D) attends over the tokens, then y = a + MLP(LN(a));
    returns the latent's token. No dropout, as big_vision's `MAPHead`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, gelu_approximate: bool,
                 eps: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, 0.0, gelu_approximate)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q = self.q(self.latent.expand(b, -1, -1))  # (B, 1, D)
        q = q.reshape(b, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, K, 1, Dh)
        kv = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim)  # (B, N, 2, K, Dh)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 × (B, K, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, K, 1, Dh)
        y = self.proj(y.transpose(1, 2).reshape(b, 1, d))  # (B, 1, D)
        y = y + self.mlp(self.norm(y))  # (B, 1, D)
        return y[:, 0]  # (B, D)


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zeroes the whole residual branch of a random subset of samples."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
    return x * mask / keep


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, dropout_rate: float,
        attention_dropout_rate: float, drop_path: float, gelu_approximate: bool, eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, attention_dropout_rate)
        self.drop = nn.Dropout(dropout_rate)  # after attention, as the Flax block
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, dropout_rate, gelu_approximate)
        self.drop_path = drop_path

    def forward(self, x: Tensor, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        y, weights = self.attn(self.norm1(x), return_weights)  # (B, N, D)
        x = x + _drop_path(self.drop(y), self.drop_path, self.training)  # (B, N, D)
        x = x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)  # (B, N, D)
        return x, weights


class PreLogits(nn.Module):
    """Linear + tanh "representation" layer; named `pre_logits.fc` as in timm."""

    def __init__(self, dim: int, representation_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.fc(x))  # (B, R)


class VisionTransformer(nn.Module):
    """ViT: patches → tokens (+ class token, registers, position) → encoder → pool → head.

    Built from a `vit_core.spec.ViTSpec` (the architecture: sizes, image size, head,
    classifier, posemb, registers, LayerNorm epsilon, GELU form), whose fields mean what
    they mean in `vit_jax.model.vit.VisionTransformer`; the keywords are how a run trains.
    A "sincos2d" model takes any image size: its table is made for each input's patch grid.
    Parameters follow timm's names; `init_weights` follows the official Flax initialisers.
    """

    def __init__(
        self,
        spec: ViTSpec,
        *,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        stochastic_depth: float = 0.0,
        head_bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.num_classes, self.classifier = spec.num_classes, spec.classifier
        self.patch_size, self.hidden_size = spec.patch_size, spec.hidden_size
        self.num_heads = spec.num_heads
        self.head_bias_init = head_bias_init
        self.grid_size = spec.grid
        self.num_prefix_tokens = spec.num_prefix_tokens
        d, eps = spec.hidden_size, spec.layer_norm_eps

        self.patch_embed = HybridEmbed(spec) if spec.is_hybrid else PatchEmbed(spec.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if spec.has_class_token else None
        self.reg_token = (
            nn.Parameter(torch.zeros(1, spec.num_registers, d)) if spec.num_registers else None
        )
        # sincos2d: no parameter (`pos_embed` None), the fixed table is added in `_encode`.
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, spec.num_prefix_tokens + spec.num_patches, d))
            if spec.posemb == "learn" else None
        )
        self.pos_drop = nn.Dropout(dropout_rate)
        # Stochastic depth grows linearly with depth (as np.linspace(0, rate, L) in Flax).
        layers = spec.num_layers
        rates = [stochastic_depth * i / max(layers - 1, 1) for i in range(layers)]
        self.blocks = nn.ModuleList(
            Block(d, spec.num_heads, spec.mlp_dim, dropout_rate, attention_dropout_rate,
                  rates[i], spec.gelu_approximate, eps)
            for i in range(layers)
        )
        self.norm = nn.LayerNorm(d, eps=eps)
        self.attn_pool = (
            AttentionPool(d, spec.num_heads, spec.mlp_dim, spec.gelu_approximate, eps)
            if spec.classifier == "map" else None
        )
        self.pre_logits = (
            nn.Identity() if spec.representation_size is None
            else PreLogits(d, spec.representation_size)
        )
        self.head = (nn.Linear(spec.pooled_width, spec.num_classes) if spec.num_classes
                     else nn.Identity())
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialises every parameter like the official Flax code (scale, not values)."""
        d = self.hidden_size
        proj = self.patch_embed.proj
        _lecun_normal_(proj.weight, fan_in=proj.weight[0].numel())  # fan_in = C·P·P
        nn.init.zeros_(proj.bias)
        for m in self.patch_embed.modules():  # a hybrid's ResNet: flax's conv/GroupNorm
            if isinstance(m, StdConv2d):
                _lecun_normal_(m.weight, fan_in=m.weight[0].numel())
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, Bottleneck):  # the official `gn3` scale_init=zeros
                nn.init.zeros_(m.norm3.weight)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if self.reg_token is not None:  # as the Flax model: normal(0.02), like posembs
            nn.init.normal_(self.reg_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)
        for blk in self.blocks:
            # Flax's q/k/v kernels are (D, K, Dh), each initialised as a flat (D, D) matrix.
            for part in blk.attn.qkv.weight.chunk(3, dim=0):  # 3 × (D, D) views
                _xavier_square_(part, d, d)
            nn.init.zeros_(blk.attn.qkv.bias)
            _xavier_square_(blk.attn.proj.weight, d, d)  # `out` (K, Dh, D) flattened
            nn.init.zeros_(blk.attn.proj.bias)
            for fc in (blk.mlp.fc1, blk.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
            for ln in (blk.norm1, blk.norm2):
                nn.init.ones_(ln.weight)
                nn.init.zeros_(ln.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        if self.attn_pool is not None:  # big_vision's MAPHead: xavier probe and kernels
            pool = self.attn_pool
            _xavier_square_(pool.latent, 1, d)  # flax fans of a (1, 1, D) param: 1 and D
            for part in (pool.q.weight, *pool.kv.weight.chunk(2, dim=0), pool.proj.weight):
                _xavier_square_(part, d, d)
            for bias in (pool.q.bias, pool.kv.bias, pool.proj.bias):
                nn.init.zeros_(bias)
            nn.init.ones_(pool.norm.weight)
            nn.init.zeros_(pool.norm.bias)
            for fc in (pool.mlp.fc1, pool.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
        if isinstance(self.pre_logits, PreLogits):  # flax nn.Dense defaults
            _lecun_normal_(self.pre_logits.fc.weight, fan_in=d)
            nn.init.zeros_(self.pre_logits.fc.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.constant_(self.head.bias, self.head_bias_init)

    def _check_images(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"Expected images of shape (B, 3, H, W), got {tuple(x.shape)}.")
        _, c, h, w = x.shape
        if c != 3:
            raise ValueError(
                f"Expected 3 colour channels in axis 1 (B, 3, H, W), got {c} (shape "
                f"{tuple(x.shape)}). NHWC input must be permuted; grayscale repeated to RGB."
            )
        p = self.spec.total_stride  # image pixels per token side
        if h % p or w % p:
            what = "total stride (ResNet × patch)" if self.spec.is_hybrid else "patch size"
            raise ValueError(f"Image size {h}x{w} is not divisible by the {what} {p}.")
        if self.pos_embed is not None and (h // p, w // p) != self.grid_size:
            raise ValueError(
                f"Images of {h}x{w} give a {h // p}x{w // p} patch grid, but the position "
                f"embedding is for a {self.grid_size[0]}x{self.grid_size[1]} grid "
                f"({self.grid_size[0] * p}x{self.grid_size[1] * p} images). Resize the position "
                f"embedding: build the model with img_size=({h}, {w}) and load weights with "
                "vit_torch.convert.load_npz(model, path, resize=True) "
                "(vit_core.posemb.resize_posemb)."
            )

    def _encode(
        self, x: Tensor, features: dict[str, Tensor] | None = None, return_attention: bool = False
    ) -> Tensor:
        """Images → tokens after the final norm; fills `features` if given."""
        self._check_images(x)
        images = x
        x = self.patch_embed(x)  # (B, N, D)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token)
                  if t is not None]
        x = torch.cat([*prefix, x], dim=1)  # (B, prefix + N, D): class token, registers
        if features is not None:
            features["embedded"] = x  # before the position embedding, as Flax's `embedded`
        if self.pos_embed is not None:
            posemb = self.pos_embed  # (1, N, D)
        else:
            # big_vision adds sincos2d to the patch tokens only: a zero row for the class token.
            s = self.spec.total_stride
            grid = (images.shape[2] // s, images.shape[3] // s)
            table = torch.tensor(sincos_2d(*grid, self.hidden_size), device=x.device)
            # float32 like `pos_embed`, so that autocast promotes the sum alike in both cases.
            posemb = F.pad(table, (0, 0, self.num_prefix_tokens, 0))  # (1, N, D)
        x = self.pos_drop(x + posemb)  # (B, N, D)
        for i, blk in enumerate(self.blocks):
            x, weights = blk(x, return_weights=return_attention)  # (B, N, D)
            if features is not None:
                features[f"block_{i}"] = x
                if return_attention:
                    features[f"attention_{i}"] = weights  # (B, K, N, N)
        x = self.norm(x)  # (B, N, D)
        if features is not None:
            features["encoded"] = x
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Args: x: (B, 3, H, W) images. Returns: (B, N, D) tokens after the final norm."""
        return self._encode(x)

    def pool(self, x: Tensor) -> Tensor:
        """Args: x: (B, N, D) normed tokens. Returns: (B, D) the class token, mean or MAP.

        "gap" averages tokens that have already gone through the final norm (the official
        code); timm's avg-pool ViTs instead pool first and norm after (`fc_norm`).
        """
        if self.attn_pool is not None:  # over the patch tokens (timm: pool_include_prefix=False)
            return self.attn_pool(x[:, self.num_prefix_tokens:])  # (B, D)
        if self.classifier == "token":
            return x[:, 0]  # (B, D)
        return x[:, self.num_prefix_tokens:].mean(dim=1)  # (B, D): the patches, no registers

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Args: x: (B, N, D) normed tokens; pre_logits: stop before the head.

        Returns: (B, num_classes) logits, or (B, R or D) pooled features with `pre_logits`.
        """
        x = self.pre_logits(self.pool(x))  # (B, R or D)
        return x if pre_logits else self.head(x)

    def forward(
        self, x: Tensor, return_features: bool = False, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Classifies a batch of images.

        Args:
          x: (B, 3, H, W) float images (scaled to [-1, 1] for the released weights).
          return_features: also return the named intermediates of the Flax model:
            "embedded", "block_{i}", "encoded", "pre_logits" (all (B, N, D) except
            "pre_logits" (B, R or D)) and with `return_attention` "attention_{i}".
          return_attention: compute the (B, K, N, N) softmax weights explicitly.

        Returns:
          (B, num_classes) logits, or (logits, features) with `return_features`.
        """
        features: dict[str, Tensor] | None = {} if return_features else None
        tokens = self._encode(x, features, return_attention)  # (B, N, D)
        pooled = self.forward_head(tokens, pre_logits=True)  # (B, R or D)
        logits = self.head(pooled)  # (B, num_classes)
        if features is None:
            return logits
        features["pre_logits"] = pooled
        return logits, features


def create_model(
    variant: str, *, num_classes: int, img_size: int | tuple[int, int] = 224, **overrides: Any
) -> VisionTransformer:
    """Builds the PyTorch ViT for a named variant.

    Args:
      variant: a name from `vit_core.variants.VARIANTS`, e.g. "B/16" or "testing".
      num_classes: size of the classification head (0 for no head).
      img_size: image side (or (H, W)) the position embedding is sized for.
      **overrides: a `ViTSpec` field (classifier, gelu_approximate, num_registers, the
        variant's own sizes such as patch_size=8, ...) or a keyword of `VisionTransformer`
        (dropout_rate, ...).

    Returns:
      The freshly initialised `VisionTransformer`.
    """
    run = {k: overrides.pop(k) for k in list(overrides) if k in RUN_KEYWORDS}
    spec = ViTSpec.from_variant(variant, num_classes=num_classes, image_size=img_size,
                                **overrides)
    return VisionTransformer(spec, **run)


RUN_KEYWORDS = frozenset(
    k for k in inspect.signature(VisionTransformer.__init__).parameters if k not in
    ("self", "spec")
)
